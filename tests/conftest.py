"""Test-wide settings: float64 is enabled only inside tests that ask for it (references are numpy)."""

import os

import pytest

# Tests run on the CPU; keep XLA from grabbing an accelerator if one happens to be visible.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compiled with LLVM's optimisations off, as the tests' runs of launch.py are (tiny_run.py says why),
# set before jax starts; pytest-xdist's workers inherit it from the first process.
from tiny_run import with_fast_compile  # noqa: E402

os.environ["XLA_FLAGS"] = with_fast_compile(os.environ.get("XLA_FLAGS", ""))

from motion_ddpm_jax import host_malloc  # noqa: E402

host_malloc.tune()  # as launch.py does: XLA:CPU's per-call buffers stay mapped (see host_malloc.py)


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory):
    """The tests' own process keeps its compiled programs in a persistent cache of its own (this worker's
    temporary folder, so no two processes write one file): a program compiled again in a later test (the
    same tiny train step, trained by one test after another) is loaded, not compiled. Loading gives the
    same compiled operations, so what the tests compute is unchanged. launch.py runs keep their own cache.
    test_resume, test_provenance, test_workdir and test_sampling (-n 2, empty caches): 381 s -> 354 s; the
    whole suite from empty caches on a 2-core Zen 3 EPYC: 1092 s without it, 1023 s with it (session 35)."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.getbasetemp() / "jax_cache"))
    yield
