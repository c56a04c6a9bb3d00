"""Test-wide settings: float64 is enabled only inside tests that ask for it (references are numpy)."""

import os

# Tests run on the CPU; keep XLA from grabbing an accelerator if one happens to be visible.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from motion_ddpm_jax import host_malloc  # noqa: E402

host_malloc.tune()  # as launch.py does: XLA:CPU's per-call buffers stay mapped (see host_malloc.py)
