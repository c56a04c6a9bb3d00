"""benchmarks/gpu_program.py: our train step compiled for an H200 on a machine without a GPU (where jax's
CUDA plugin is installed), its products against the analytic FLOP count, and the message that says what
to install where it is not."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = [
    *("--latent", "32", "--layers", "2", "--ff", "32", "--heads", "4", "--text-width", "8"),
    *("--text-layers", "1", "--text-heads", "2", "--text-ff", "16", "--text-length", "5", "--vocab", "40"),
    *("--batch", "2", "--frames", "6", "--features", "12"),
]
HAVE_CUDA_PLUGIN = any(
    importlib.util.find_spec(f"jax_plugins.xla_cuda{version}") is not None for version in (12, 13)
) if importlib.util.find_spec("jax_plugins") is not None else False  # fmt: skip


def _run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES")
    }
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_program.py"), *args],
        capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path,
    )  # fmt: skip


@pytest.mark.skipif(
    HAVE_CUDA_PLUGIN, reason="jax's CUDA plugin is installed here: the compile test runs instead"
)
def test_without_a_cuda_plugin_it_says_what_to_install(tmp_path):
    import jax

    result = _run(*TINY, tmp_path=tmp_path)
    assert result.returncode != 0
    assert f"jax-cuda13-plugin=={jax.__version__}" in result.stderr, result.stderr[-2000:]


@pytest.mark.skipif(not HAVE_CUDA_PLUGIN, reason="needs jax's CUDA plugin (see benchmarks/gpu_program.py)")
def test_compiles_the_train_step_for_an_h200_without_one(tmp_path):
    """A GPU program (cuBLAS or Triton products, no XLA:CPU fusions), whose products do the analytic
    count's FLOPs (common.model_flops) and, for attention=block-diagonal, exactly that spelling's extra:
    (1 - 1/heads) 2 B C^2 per frame, key and text token of each layer's context and read, three times.
    Heads 8 wide: XLA pads narrower per-head products for cuBLAS, which the count from shapes sees."""
    sys.path.insert(0, str(BENCHMARKS))
    import common

    out, kept = tmp_path / "gpu_program.json", tmp_path / "hlo"
    result = _run(
        *TINY, "--variants", "current,attention=block-diagonal", "--keep-hlo", str(kept), "--json", str(out),
        tmp_path=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["complete"] and record["gpu"] == "h200"
    current, block = record["variants"]
    parser = common.step_parser(None)
    common.add_model_flags(parser)
    args = parser.parse_args(TINY)
    config = common.bench_config(args, args.frames)
    analytic = common.model_flops(args.batch, args.frames, args.features, args.text_length, config.model)
    assert current["program_gflop"] == pytest.approx(analytic["train_step"] / 1e9, rel=0.02)
    extra = 3 * (1 - 1 / 4) * 2 * args.batch * 32**2 * (3 * args.frames + args.text_length) * 2 / 1e9
    assert block["program_gflop"] == pytest.approx(current["program_gflop"] + extra, rel=0.02)
    assert current["memory_bound_gbytes"] > 0 and current["kinds"]["reduction"]["ops"] > 0
    assert current["device_memory_gb"] > 0
    program = (kept / "current.hlo.txt").read_text()
    assert ("__cublas" in program or "__triton" in program) and "__ynn" not in program
    assert (kept / "attention_block-diagonal.hlo.txt").is_file()
    assert "| current |" in result.stdout and "| attention=block-diagonal |" in result.stdout
    again = _run(*TINY, "--keep-hlo", str(kept), tmp_path=tmp_path)  # never writes over kept programs
    assert again.returncode == 2 and "is not empty" in again.stderr


@pytest.mark.skipif(not HAVE_CUDA_PLUGIN, reason="needs jax's CUDA plugin (see benchmarks/gpu_program.py)")
def test_compiles_the_pallas_kernels_for_an_h200(tmp_path):
    """`context=pallas+read=pallas+style=pallas`: the attention's context (two kernels), read and
    stylization (three) and the feed-forward stylization's backward (one) lowered by Pallas's Triton
    backend and compiled by ptxas for sm_90, in heads of 16 (the kernels' smallest); the context's and
    the read's per-head products leave XLA's count."""
    out, kept = tmp_path / "gpu_program.json", tmp_path / "hlo"
    variants = "current,context=pallas+read=pallas+style=pallas"
    result = _run(
        *TINY, "--heads", "2", "--variants", variants, "--keep-hlo", str(kept), "--json", str(out),
        tmp_path=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    current, fused = json.loads(out.read_text())["variants"]
    assert fused["kinds"]["kernel"]["ops"] > 0 and "kernel" not in current["kinds"]
    program = (kept / "context_pallas_read_pallas_style_pallas.hlo.txt").read_text()
    names = (
        "key_value_context", "key_value_context_backward", "stylized_read", "stylized_read_statistics",
        "stylized_read_backward", "modulated_silu_backward",
    )  # fmt: skip
    for name in names:
        assert f'name = "{name}"' in program, name  # the kernels' names in the program's Triton calls
    assert fused["program_gflop"] < current["program_gflop"]
