"""Test-wide settings: float64 is enabled only inside tests that ask for it (references are numpy)."""

import os

# Tests run on the CPU; keep XLA from grabbing an accelerator if one happens to be visible.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
