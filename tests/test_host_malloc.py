"""host_malloc.tune(): freed big blocks stay mapped (no page faults when reused), and the opt-outs hold.

Each case runs in a fresh interpreter: the settings are process-wide and this test process has them
already (conftest.py).
"""

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK_MB = (256, 192)  # the second, smaller block fits in the first one's freed memory
PAGES = [size * 2**20 // 4096 for size in BLOCK_MB]

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc settings"
)

# posix_memalign, touch and free a 256 MB block, then a 192 MB one, each from a worker thread (as XLA:CPU
# does with its buffers), and count the page faults of each round. (Not numpy: it asks for huge pages.)
# The second block is smaller so that it fits in the first one's freed memory whatever small allocation
# lands after it (asking for exactly the same size again can miss by the alignment padding).
SCRIPT = textwrap.dedent(
    f"""
    import ctypes, json, resource, sys, threading
    sys.path.insert(0, {str(ROOT)!r})
    from motion_ddpm_jax import host_malloc
    state = host_malloc.tune()
    libc = ctypes.CDLL("libc.so.6")
    libc.free.argtypes = [ctypes.c_void_p]

    def round_trip(size):
        pointer = ctypes.c_void_p()
        assert libc.posix_memalign(ctypes.byref(pointer), 64, ctypes.c_size_t(size)) == 0
        ctypes.memset(pointer, 1, size)  # touch every page
        libc.free(pointer)

    faults = []
    for megabytes in {BLOCK_MB!r}:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        worker = threading.Thread(target=round_trip, args=(megabytes * 2**20,))
        worker.start()
        worker.join()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({{"state": state, "described": host_malloc.describe(), "faults": faults}}))
    """
)


def run(**env_overrides) -> dict:
    """SCRIPT's result in a fresh interpreter; JAX_PLATFORMS=cpu unless overridden (None: unset), so that
    the outcome does not depend on whether this machine has an accelerator."""
    ours = ("GLIBC_TUNABLES", "MOTION_DDPM_JAX_MALLOC", "JAX_PLATFORMS")
    env = {k: v for k, v in os.environ.items() if k not in ours} | {"JAX_PLATFORMS": "cpu"}
    env.update(env_overrides)
    env = {k: v for k, v in env.items() if v is not None}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_tuned_malloc_reuses_a_freed_block_without_page_faults():
    tuned = run()
    assert tuned["state"].startswith("tuned") and tuned["described"] == tuned["state"]
    assert tuned["faults"][0] >= 0.9 * PAGES[0]  # the first touch maps every page
    assert tuned["faults"][1] < 0.02 * PAGES[1], tuned  # the second block reuses them


@pytest.mark.parametrize("value", ["off", "0", "False", " no "])
def test_natural_off_values_opt_out_and_another_value_is_named_as_left_on(value):
    """Only 'default' had opted out: 'off', '0' and 'false' left the tuning on, in silence."""
    assert (
        run(MOTION_DDPM_JAX_MALLOC=value)["state"]
        == f"glibc defaults (MOTION_DDPM_JAX_MALLOC={value.strip()})"
    )


def test_a_value_that_opts_out_of_nothing_is_named_in_the_state():
    state = run(MOTION_DDPM_JAX_MALLOC="yes")["state"]
    assert state.startswith("tuned") and "MOTION_DDPM_JAX_MALLOC='yes' is none of default, off" in state


def test_glibc_defaults_fault_the_whole_block_again():
    """The reference the fix is measured against: with glibc's defaults the block is unmapped on free."""
    default = run(MOTION_DDPM_JAX_MALLOC="default")
    assert default["state"] == "glibc defaults (MOTION_DDPM_JAX_MALLOC=default)"
    assert default["faults"][1] >= 0.9 * PAGES[1], default


def test_the_users_own_tunables_win():
    own = run(GLIBC_TUNABLES="glibc.malloc.tcache_count=0")
    assert own["state"] == "the user's GLIBC_TUNABLES (glibc.malloc.tcache_count=0)"
    assert own["faults"][1] >= 0.9 * PAGES[1], own  # nothing of ours was applied


INTERPOSER = textwrap.dedent(
    """
    #include <stddef.h>
    extern void *__libc_malloc(size_t);
    void *malloc(size_t n) { return __libc_malloc(n); }
    """
)


def test_a_preloaded_allocator_is_left_alone(tmp_path):
    """With malloc interposed (LD_PRELOAD of jemalloc, tcmalloc, ...) the settings would tune an allocator the
    process does not use: nothing is applied and the state says so. The interposer here is a one-line
    malloc of our own, built with the C compiler (glibc's exports __libc_malloc)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build a malloc interposer")
    source, library = tmp_path / "interpose.c", tmp_path / "libinterpose.so"
    source.write_text(INTERPOSER)
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True, timeout=60)
    preloaded = run(LD_PRELOAD=str(library))
    assert preloaded["state"] == f"the process's own malloc, not glibc's (LD_PRELOAD={library})", preloaded
    assert preloaded["faults"][1] >= 0.9 * PAGES[1], preloaded  # nothing of ours was applied


def test_an_accelerator_run_keeps_glibc_defaults():
    """Where jax runs on an accelerator nothing is applied: one arena slowed XLA:GPU's threaded compiler."""
    gpu = run(JAX_PLATFORMS="cuda")
    assert gpu["state"] == "glibc defaults (jax runs on an accelerator: JAX_PLATFORMS=cuda)", gpu
    assert gpu["described"] == gpu["state"]
    assert gpu["faults"][1] >= 0.9 * PAGES[1], gpu  # nothing of ours was applied
    cpu = run(JAX_PLATFORMS="cpu")
    assert cpu["state"].startswith("tuned") and cpu["faults"][1] < 0.02 * PAGES[1], cpu


def _fake_plugins(tmp_path: Path, *names: str, top_level: tuple[str, ...] = ()) -> Path:
    """A `jax_plugins` namespace package holding empty plugin modules, plus an unrelated one, and empty
    top-level packages `top_level`, plus unrelated ones."""
    package = tmp_path / "jax_plugins"
    package.mkdir()
    for name in (*names, "my_profiler_hooks"):
        (package / f"{name}.py").write_text("")
    for name in (*top_level, "jax_cuda_tools", "my_cuda13_plugin"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    return tmp_path


def test_installed_plugins_lists_accelerator_plugins_without_importing_them(tmp_path):
    from motion_ddpm_jax import host_malloc

    root = _fake_plugins(tmp_path, "xla_cuda13", "xla_rocm", top_level=("jax_cuda13_plugin", "libtpu"))
    code = (
        f"import sys; sys.path.insert(0, {str(root)!r}); sys.path.insert(0, {str(ROOT)!r}); "
        "from motion_ddpm_jax import host_malloc; print(host_malloc.installed_plugins()); "
        "print(sorted(m for m in sys.modules if m.startswith('jax')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    listed, imported = out.stdout.strip().splitlines()
    assert listed == "['jax_cuda13_plugin', 'jax_plugins.xla_cuda13', 'jax_plugins.xla_rocm', 'libtpu']"
    assert imported == "[]"  # neither jax nor a plugin was imported
    # This environment (a CPU-only jax lists nothing; a GPU machine's jax its CUDA plugin): each name found.
    assert all(importlib.util.find_spec(name) is not None for name in host_malloc.installed_plugins())


def test_a_plugin_alone_does_not_mean_an_accelerator(tmp_path):
    """A GPU plugin on a machine without the device: jax runs on the CPU, the settings apply."""
    from motion_ddpm_jax import host_malloc

    if any(os.path.exists(node) for node in host_malloc.ACCELERATOR_NODES):
        pytest.skip("this machine has an accelerator's device node")
    root = _fake_plugins(tmp_path, "xla_cuda13")
    tuned = run(PYTHONPATH=str(root), JAX_PLATFORMS=None)
    assert tuned["state"].startswith("tuned"), tuned


@pytest.mark.parametrize(
    ("environ", "nodes", "plugins", "expected"),
    [
        ({}, [], [], None),
        ({}, ["/dev/nvidiactl"], [], None),  # the device, but jax has no plugin for it: the CPU
        ({}, [], ["jax_plugins.xla_cuda13"], None),  # a plugin, but no device
        ({}, ["/dev/nvidiactl"], ["jax_plugins.xla_cuda13"], "/dev/nvidiactl with jax_plugins.xla_cuda13"),
        ({}, ["/dev/kfd"], ["jax_plugins.xla_rocm"], "/dev/kfd with jax_plugins.xla_rocm"),
        ({}, ["/dev/accel0", "/dev/vfio/0"], ["libtpu"], "/dev/accel0, /dev/vfio/0 with libtpu"),
        ({"JAX_PLATFORMS": "cpu"}, ["/dev/nvidiactl"], ["jax_plugins.xla_cuda13"], None),
        ({"JAX_PLATFORMS": " CPU ,cuda"}, ["/dev/nvidiactl"], ["jax_plugins.xla_cuda13"], None),
        ({"JAX_PLATFORMS": "cuda,cpu"}, [], [], "JAX_PLATFORMS=cuda,cpu"),
        ({"JAX_PLATFORMS": "tpu"}, [], [], "JAX_PLATFORMS=tpu"),
        (
            {"JAX_PLATFORMS": ""},
            ["/dev/nvidiactl"],
            ["jax_plugins.xla_cuda12"],
            "/dev/nvidiactl with jax_plugins.xla_cuda12",
        ),
    ],
)
def test_accelerator_in_use(environ, nodes, plugins, expected):
    from motion_ddpm_jax import host_malloc

    assert set(nodes) <= set(host_malloc.ACCELERATOR_NODES)
    assert host_malloc.accelerator_in_use(environ, lambda path: path in nodes, plugins) == expected
