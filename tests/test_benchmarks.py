"""The benchmark scripts run end to end at a tiny model size and write their JSON (the torch twin's rows
too where torch is installed: `pip install -e '.[bench]'`). Timings are not checked, only that every case
ran and reported a time; the functions the benchmarks time are tested against references elsewhere."""

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import mmap
import os
import re
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
from central_differences import checked_against_central_differences, standardize64
from tiny_run import fast_compile_flags, with_fast_compile

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = [
    *("--latent", "16", "--layers", "1", "--ff", "32", "--heads", "2", "--text-width", "8"),
    *("--text-layers", "1", "--text-heads", "2", "--text-ff", "16", "--text-length", "5", "--vocab", "40"),
]
HAVE_TORCH = importlib.util.find_spec("torch") is not None


# The benchmarks' runs here check what they compute and report, not their speed, on models so small that
# compiling is most of their time: compiled as every process of the suite is (`tiny_run.fast_compile_flags`),
# with LLVM's optimisations off (18-36% less time per test, session 26) and XLA:CPU's older fusion
# emitters (half the compile time again, session 34).


def run_benchmark(script: str, tmp_path: Path, *args: str, cache: Path | None = None) -> tuple[dict, str]:
    """`script` run with `args` and --json: (its record, its stdout). `cache`: a persistent compilation
    cache for the run (`compile_cache`)."""
    out = tmp_path / f"{Path(script).stem}.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = with_fast_compile(env.get("XLA_FLAGS", ""))
    if cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return json.loads(out.read_text()), result.stdout


def test_sampling_benchmark_runs_every_case(tmp_path, capsys):
    impls = ["jax-fp32", "jax-fp32-stepwise"] + (["torch-fp32", "torch-bf16-hoisted"] if HAVE_TORCH else [])
    record, stdout = run_benchmark(
        "bench_sampling.py",
        tmp_path,
        *("--cases", "ddpm:2x6,ddim:2x6", "--ddpm-steps", "7", "--ddim-steps", "3", "--features", "6"),
        *("--impls", ",".join(impls), "--repeats", "1", "--warmup", "1", *TINY),
    )
    assert record["complete"]
    got = {(row["impl"], row["sampler"], row["steps"]) for row in record["rows"]}
    assert got == {(impl, sampler, n) for impl in impls for sampler, n in (("ddpm", 7), ("ddim", 3))}
    assert all(row["median_s"] > 0 and row["per_step_ms"] > 0 for row in record["rows"])
    assert "jax-fp32-stepwise" in stdout
    if HAVE_TORCH:  # the plain twin is its own reference; ours has no bf16 hoisted twin beside it
        plain = {row["sampler"]: row for row in record["rows"] if row["impl"] == "torch-fp32"}
        assert all(row["speedup_vs_twin_same_precision"] == 1.0 for row in plain.values())
        ours = [row for row in record["rows"] if row["impl"] == "jax-fp32"]
        assert all("speedup_vs_hoisted_twin_same_precision" not in row for row in ours)
        hoisted = [row for row in record["rows"] if row["impl"] == "torch-bf16-hoisted"]
        assert all(row["speedup_vs_hoisted_twin_same_precision"] == 1.0 for row in hoisted)
        # The GPU check's report shows both ratios of its sampling case.
        sys.path.insert(0, str(BENCHMARKS))
        import gpu_summary

        folder = tmp_path / "gpu"
        folder.mkdir()
        (folder / "sampling.json").write_text(json.dumps(record))
        assert gpu_summary.main([str(folder), "--cases", "sampling"]) == 0
        report = capsys.readouterr().out
        assert "x hoisted" in report
        assert re.search(r"torch-bf16-hoisted +ddpm +2x6 +7 +[0-9.]+ +[0-9.]+ +- +1\.00", report), report


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """A persistent compilation cache for the benchmark runs that compile the same train step (the tiny
    model at B=2, T=6, D=12): the second run loads what the first compiled (~5 s of CPU each on CI's
    cores), as the tests' own process does (conftest.py); what a loaded program computes is the same. A
    folder of this module's (per xdist worker), apart from the tests' process's own cache: one process
    writes it at a time."""
    return tmp_path_factory.mktemp("benchmark_jax_cache")


@pytest.mark.parametrize("processes", ["shared", "separate"])
def test_train_step_benchmark_runs_every_case(tmp_path, processes, compile_cache):
    """In one process (the default), or each framework in a worker process of its own: every
    case is timed in every round, and the log says where the steps ran."""
    impls = ["jax-fp32", "jax-bf16"] + (["torch-fp32"] if HAVE_TORCH else [])
    record, stdout = run_benchmark(
        "bench_train_step.py",
        tmp_path,
        *("--batch", "2", "--frames", "6", "--features", "12", "--impls", ",".join(impls)),
        *("--geometric", "off", "--repeats", "2", "--warmup", "1", "--memory", "none"),
        *("--matmul-size", "64", "--processes", processes, *TINY),
        cache=compile_cache,
    )
    assert record["complete"] and record["args"]["processes"] == processes
    rows = record["rows"]
    assert sorted(row["impl"] for row in rows) == sorted(impls)
    assert all(row["median_s"] > 0 and row["features"] == 12 for row in rows)
    assert all(len(row["seconds"]) == len(row["minor_page_faults"]) == 2 for row in rows)
    assert all(row["compile_s"] > 0 for row in rows if row["impl"].startswith("jax"))
    where = "each framework in a process of its own" if processes == "separate" else "all in one process"
    assert where in stdout
    process = {row["impl"].split("-")[0]: row["process_id"] for row in rows}  # the same within a framework
    assert len({row["process_id"] for row in rows}) == (len(process) if processes == "separate" else 1)


def test_train_step_benchmark_refuses_a_bone_length_term_it_cannot_add(capsys):
    """--geometric on with no BEAT-position feature count (264) once timed plain steps, unnoted."""
    sys.path.insert(0, str(BENCHMARKS))
    import bench_train_step

    with pytest.raises(SystemExit) as refused:
        bench_train_step.parse_args(["--features", "12", "--geometric", "on"])
    assert refused.value.code == 2
    assert "--geometric on" in capsys.readouterr().err
    # Where one count can take the term, the others run without it, as the help says.
    assert bench_train_step.parse_args(["--features", "12,264", "--geometric", "on"]).geometric == "on"


def test_train_step_benchmark_warms_every_case_up_before_it_times_any_and_counts_page_faults():
    sys.path.insert(0, str(BENCHMARKS))
    import bench_train_step

    class Case(str):
        name = property(str.__str__)

    calls, size = [], 8 * 2**20
    pages = size // mmap.PAGESIZE

    def run(case):
        calls.append(case)
        if case == "fresh memory":  # a new anonymous mapping in small pages, every page written: a fault each
            with mmap.mmap(-1, size) as memory:
                if hasattr(mmap, "MADV_NOHUGEPAGE"):
                    memory.madvise(mmap.MADV_NOHUGEPAGE)
                memory.write(b"\x01" * size)
        return 0.0

    prepared = {Case(c): (lambda c=c: run(c), {}) for c in ("a", "b", "fresh memory")}
    seconds = bench_train_step.interleaved(prepared, repeats=2, warmup=1)
    # Round r starts at case r mod 3; the warm-up round is round 0 and comes before every timed call.
    assert calls == ["a", "b", "fresh memory", "b", "fresh memory", "a", "fresh memory", "a", "b"]
    assert {case: len(s) for case, s in seconds.items()} == {"a": 2, "b": 2, "fresh memory": 2}
    faults = prepared["fresh memory"][1]["minor_page_faults"]
    assert len(faults) == 2 and all(f >= pages for f in faults), (faults, pages)


def test_train_step_benchmark_pipelines_steps_and_reports_time_per_step(monkeypatch):
    """--pipeline K: one timed call runs K steps (ours: the state advances by K) and waits once; the
    seconds per step are the call's over K."""
    sys.path.insert(0, str(BENCHMARKS))
    import bench_train_step

    args = bench_train_step.parse_args(["--batch", "2", "--frames", "6", "--pipeline", "3", *TINY])
    ours = bench_train_step.OurStep(args, 12)
    compiled, _, _ = ours.compile("float32", geometric=False)
    ours.runner(compiled, steps=3)()
    assert int(ours.state.step) == 3
    ours.runner(compiled)()
    assert int(ours.state.step) == 4
    case = bench_train_step.Case("jax-fp32", 12, False)
    prepared = bench_train_step.prepare(args, 12, [case], None)
    assert prepared[case][1]["steps_per_call"] == 3
    monkeypatch.setattr(bench_train_step, "timed_call", lambda run: bench_train_step.Timed((0.5, 1.5, 0)))
    assert bench_train_step.interleaved(prepared, repeats=2)[case] == [0.5, 0.5]
    with pytest.raises(SystemExit):
        bench_train_step.parse_args(["--pipeline", "0"])


def test_train_step_benchmark_names_how_a_worker_process_ended():
    """A worker that ends before it answers (here killed by signal 9, as the out-of-memory killer does)
    stops the benchmark with its exit and a hint, not a broken pipe."""
    sys.path.insert(0, str(BENCHMARKS))
    import bench_train_step

    worker = bench_train_step.Worker.__new__(bench_train_step.Worker)
    worker.process = subprocess.Popen(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    worker.process.wait(timeout=60)
    with pytest.raises(SystemExit, match=r"killed by signal 9\) before it answered \(.*--processes shared"):
        worker.runner(0)()


def test_layer_benchmark_times_every_part(tmp_path):
    record, stdout = run_benchmark(
        "bench_layer.py",
        tmp_path,
        *("--batch", "2", "--frames", "6", "--latent", "16", "--ff", "32", "--heads", "2"),
        *("--text-length", "5", "--text-width", "8", "--repeats", "1"),
    )
    parts = [row["part"] for row in record["rows"]]
    assert parts[:3] == ["feed-forward", "self-attention", "cross-attention"]
    assert all(row["seconds"] > 0 for row in record["rows"])
    assert "layer (the three blocks)" in stdout


def run_variants(tmp_path, variants, dtype, frames="8", *extra, cache=None):
    """bench_variants.py on the tiny model at B=2: (record, its rows by variant, stdout)."""
    record, stdout = run_benchmark(
        "bench_variants.py",
        tmp_path,
        *("--variants", ",".join(variants), "--dtype", dtype, "--batch", "2", "--frames", frames),
        *("--features", "12", "--rounds", "1", *TINY, *extra),
        cache=cache,
    )
    return record, {row["variant"]: row for row in record["rows"]}, stdout


def test_variants_benchmark_pairs_the_variants_and_checks_their_results(tmp_path):
    """Variants that compute the same step (same bits) and the transposes' cost probe, which does not:
    the parameter check must tell them apart; the feed-forward output in bf16 (another rounding) stays
    near the current step. `transpose=plain`, `residual=transposed-barrier` and `backward=fused` run
    joined, one compile instead of three: joined, each swaps every call it swaps alone (the barrier's
    Dense layers make their transposed copy with `_rows_last`, then the plain one; the standardization
    is apart from both), so a change of bits by any of them shows in the joined row."""
    variants = [
        "current",
        "transpose=plain+residual=transposed-barrier+backward=fused",
        "transpose=none",
        "ffn=compute-dtype-output",
    ]
    record, rows, stdout = run_variants(tmp_path, variants, "bfloat16")
    assert list(rows) == variants and all(len(row["seconds"]) == 1 for row in rows.values())
    for same in variants[:-2]:  # the same function, the same bits (from perturbed parameters: every
        # gradient of the network is in play, not only those of the zero-initialised output layers)
        assert rows[same]["max_param_difference"] == 0 == rows[same]["grad_norm_relative_difference"]
        assert rows[same]["gradient_relative_difference"] == 0
    assert rows["transpose=none"]["max_param_difference"] > 0
    assert rows["transpose=none"]["grad_norm_relative_difference"] > 0
    assert rows["transpose=none"]["gradient_relative_difference"] > 0.1
    # the feed-forward output rounded to bf16: another rounding of the same function (the same bits in
    # the first steps here: linear2 starts at zero, and its output's cotangent is rounded to bf16 anyway)
    assert rows["ffn=compute-dtype-output"]["grad_norm_relative_difference"] < 0.02
    assert "vs current" in stdout


def test_variants_benchmark_takes_gpu_spellings_kernels_and_xla_options(tmp_path):
    """The spellings that are candidates for the GPU compute the current step to float32 rounding, among
    them `read=pallas` (the attention's read and stylization as Pallas kernels, interpreted), and with
    `context=pallas` (the keys and values as one product, their context as Pallas kernels) and
    `style=pallas` for the feed-forward blocks (a latent width of 32 in 2 heads of 16, the kernels'
    smallest head: with TINY's heads of 8 they fall back); an `xla:` variant compiles the current step
    with an XLA option (a GPU one: ignored on the CPU, so the same bits); one this XLA does not know is
    reported, and the others are still timed. (One run: the current step is compiled once.
    `attention=tokens-major` and `style=written-backward` run joined, not each alone as well: joined,
    each swaps every call it swaps alone (the attention blocks' read still calls the stylization), so
    a difference in either shows in the joined row, one compile instead of three; so do the three Pallas
    spellings, which test_kernels checks one by one against float64 gradients and test_model together
    against XLA's model.)"""
    from motion_ddpm_jax import kernels

    assert kernels.read_fused_available(np.zeros((2, 8, 32)), np.zeros((2, 2, 16, 16)), 2)
    assert kernels.context_fused_available(np.zeros((2, 8, 64)), np.ones((2, 8), bool), 2)
    variants = [
        "current",
        "standardize=saved-statistics",
        "attention=block-diagonal",
        "attention=tokens-major+style=written-backward",
        "context=pallas+read=pallas+style=pallas",
        "xla:xla_gpu_dot_merger_threshold_mb=0",
        "xla:xla_no_such_option=1",
    ]
    record, rows, stdout = run_variants(tmp_path, variants, "float32", "8", "--latent", "32")
    assert list(rows) == variants[:-1]
    for spelling in variants[1:-2]:
        assert rows[spelling]["max_param_difference"] < 1e-6, spelling
        assert rows[spelling]["grad_norm_relative_difference"] < 1e-6, spelling
        assert rows[spelling]["gradient_relative_difference"] < 1e-4, spelling
    assert rows["xla:xla_gpu_dot_merger_threshold_mb=0"]["max_param_difference"] == 0
    assert "No such compile option" in record["failed"]["xla:xla_no_such_option=1"]
    assert "xla:xla_no_such_option=1" in stdout and "did not compile" in stdout


def test_variants_benchmark_stops_compiling_at_its_deadline(tmp_path, compile_cache):
    """--deadline-s (gpu_check.sh passes each case's time limit): once another compile and the rounds would
    pass it, the remaining variants are skipped and named, and the variants compiled by then are timed
    and written, rather than the whole case cut at its limit with nothing written. (6 frames: `current`
    in float32 is then the train step benchmark's jax-fp32 step, loaded from `compile_cache` where that
    ran first; a loaded compile is quicker still, and the deadline's 15 s margin leaves no room anyway.)"""
    variants = ["current", "transpose=plain", "attention=einsum"]
    record, rows, stdout = run_variants(
        tmp_path, variants, "float32", "6", "--deadline-s", "1", cache=compile_cache
    )
    assert list(rows) == ["current"] and rows["current"]["median_s"] > 0 and record["complete"]
    assert set(record["skipped"]) == {"transpose=plain", "attention=einsum"}
    assert all("would pass the deadline of 1 s" in why for why in record["skipped"].values())
    assert re.search(r"transpose=plain +not compiled", stdout), stdout


def test_gpu_summary_reads_a_cut_variants_case_and_a_profiled_variant(tmp_path, capsys):
    """The GPU check's report: a variants record cut short (compile times only, as bench_variants writes
    them after each compile) is shown as partial, with the check columns; only the cases asked for are
    listed as missing."""
    sys.path.insert(0, str(BENCHMARKS))
    import gpu_summary

    machine = {"jax_device": "NVIDIA H100", "jax": "0.11.2", "date": "2026-12-05"}
    args = {"batch": 256, "dtype": "bfloat16", "layers": 2, "rounds": 5}
    partial = {
        "machine": machine,
        "args": args,
        "complete": False,
        "rows": [{"variant": "current", "compile_s": 91.0}, {"variant": "read=pallas", "compile_s": 88.5}],
        "skipped": {"attention=tokens-major": "not compiled: ..."},
    }
    (tmp_path / "variants.json").write_text(json.dumps(partial))
    assert gpu_summary.main([str(tmp_path), "--cases", "variants,profile_variant"]) == 0
    report = capsys.readouterr().out
    assert "NVIDIA H100; jax 0.11.2" in report and "[PARTIAL" in report
    assert "rel dgrad" in report and "d grad_norm" in report and "88.5" in report
    assert "attention=tokens-major: not compiled" in report
    assert "no rows from: profile_variant" in report and "train_step" not in report


def test_the_variants_gradient_check_reads_every_leaf_of_adams_first_moment():
    """`rel dgrad`: Adam's first moments found in a nested optimizer state (a chain inside a wrapper),
    each leaf's difference relative to its own largest value, floored at GRADIENT_FLOOR of the largest
    over all leaves (a leaf that is 0 analytically holds rounding noise)."""
    sys.path.insert(0, str(BENCHMARKS))
    import bench_variants
    import jax.numpy as jnp
    import optax

    params = {"big": jnp.ones(3), "small": jnp.full(2, 1e-2), "noise": jnp.full(2, 1e-9)}
    optimizer = optax.chain(optax.clip_by_global_norm(1e6), optax.adam(1e-3))
    wrapped = {"inner": optimizer.init(params), "count": jnp.zeros(())}

    def moments(grads):
        _, state = optimizer.update(grads, optimizer.init(params))
        return bench_variants._first_moments({"inner": state, "count": jnp.zeros(())})

    assert len(bench_variants._first_moments(wrapped)) == 3
    reference = moments(params)
    changed = moments({**params, "small": params["small"] * 1.1, "noise": params["noise"] * 3})
    checks = {"a": (params, 1.0, reference), "b": (params, 1.0, changed)}
    rows = dict(bench_variants._train_step_checks(checks, "a"))
    np.testing.assert_allclose(rows["b"]["gradient_relative_difference"], 0.1, rtol=1e-4)  # not 2.0
    assert rows["a"]["gradient_relative_difference"] == 0


def test_the_model_flags_take_the_kernels_into_the_config():
    """`--kernels pallas` reaches config.model.kernels (every benchmark builds its model from it; on the
    CPU the model then runs XLA's spelling, tests/test_model.py); another value is refused, naming it."""
    sys.path.insert(0, str(BENCHMARKS))
    import argparse

    import common

    parser = argparse.ArgumentParser()
    common.add_model_flags(parser)
    assert common.bench_config(parser.parse_args([]), 60).model.kernels == "xla"
    assert common.bench_config(parser.parse_args(["--kernels", "pallas"]), 60).model.kernels == "pallas"
    with pytest.raises(SystemExit):
        parser.parse_args(["--kernels", "triton"])


def test_saved_statistics_standardization_has_the_float64_gradient():
    """bench_variants' LayerNorm standardization with a written-out backward pass, against central
    differences of a float64 numpy standardization (rows with a large mean against their spread, where a
    careless formula loses digits)."""
    sys.path.insert(0, str(BENCHMARKS))
    import bench_variants

    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 24)) * rng.uniform(0.5, 3.0, size=(4, 1)) + [[0.0], [5.0], [-20.0], [100.0]]
    g = rng.normal(size=x.shape)
    checked_against_central_differences(bench_variants._standardize_saved_statistics, standardize64, [x], g)


def test_written_backward_of_the_stylization_has_the_float64_gradient():
    """bench_variants' SiLU(standardize(h) * multiplier + offset) with its backward pass written out:
    the gradients of h, the multiplier and the offset against central differences in float64."""
    sys.path.insert(0, str(BENCHMARKS))
    import bench_variants

    rng = np.random.default_rng(4)
    h = rng.normal(size=(2, 5, 16)) * 2.0 + rng.normal(size=(2, 5, 1)) * 3.0
    multiplier, offset = rng.normal(size=(2, 16)), rng.normal(size=(2, 16))
    g = rng.normal(size=h.shape)

    def reference(h, multiplier, offset):
        pre = standardize64(h) * multiplier[:, None, :] + offset[:, None, :]
        return pre / (1.0 + np.exp(-pre))

    args = [h, multiplier, offset]
    checked_against_central_differences(bench_variants._modulated_silu_written, reference, args, g)


def test_variants_benchmark_parses_xla_options():
    sys.path.insert(0, str(BENCHMARKS))
    import bench_variants

    parsed = bench_variants.compiler_options("xla:a_flag=false+b_flag=32+c_flag=0.5+d_flag=name")
    assert parsed == {"a_flag": False, "b_flag": 32, "c_flag": 0.5, "d_flag": "name"}
    assert bench_variants.compiler_options("current") == {}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        bench_variants.compiler_options("xla:no_value")
    with pytest.raises(SystemExit):
        bench_variants.parse_args(["--variants", "current,xla:a=1", "--sampler-steps", "3"])
    with pytest.raises(SystemExit):
        bench_variants.parse_args(["--variants", "current,attention=tokens-major+no=such"])
    assert bench_variants.parse_args(["--variants", "current,attention=tokens-major+style=written-backward"])


def test_variants_benchmark_times_the_sampler_and_compares_a_denoiser_output(tmp_path):
    """--sampler-steps: the evaluated spellings of the model give the same denoiser output to float32
    rounding, and the check sees the rounding of the two-pass statistics (not a constant 0). 2 x 512
    frames: enough query rows for the read's evaluated spelling to differ from the heads-first one."""
    variants = ["current", "standardize=twopass", "read=heads-first", "context=heads-first"]
    record, rows, stdout = run_variants(tmp_path, variants, "float32", "512", "--sampler-steps", "3")
    assert list(rows) == variants and all(len(row["seconds"]) == 1 for row in rows.values())
    assert rows["current"]["max_output_relative_difference"] == 0
    assert 0 < rows["standardize=twopass"]["max_output_relative_difference"] < 1e-5
    assert all(row["max_output_relative_difference"] < 1e-5 for row in rows.values())
    assert "DDPM sampler of 3 steps" in stdout and "ms/step" in stdout


@pytest.mark.parametrize(
    "script",
    [
        "bench_sampling.py",
        "bench_train_step.py",
        "bench_layer.py",
        "profile_step.py",
        "bench_variants.py",
        "bench_pipeline.py",
        "bench_bvh.py",
        "bench_products.py",
        "gpu_summary.py",
        "bench_solvers.py",
        "bench_optimizer.py",
        "bench_generate.py",
    ],
)
def test_benchmark_help_describes_it(script):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "usage" in result.stdout.lower()
    assert "no results in" not in result.stdout  # gpu_summary.py once took --help for its folder


# Every column of the tables, as printed (the reviewer found `x twin32`, `x twin16`, `x tc16`, `est 1000`
# and the sampling FLOP/s explained nowhere).
TRAIN_COLUMNS = ["case", "s/step", "samples/s", "x twin32", "x twin16", "x tc16", "FLOP/s", "%floor", "MFU%",
                 "compile", "peak RSS", "dev peak"]  # fmt: skip
SAMPLING_COLUMNS = ["impl", "sampler", "BxT", "steps", "s", "ms/step", "est 1000 s", "x twin", "x hoisted",
                    "FLOP/s", "compile", "1st call"]  # fmt: skip
SUMMARY_COLUMNS = ["case", "s/step", "samples/s", "x twin32", "x twin16", "x tc16", "TFLOP/s", "MFU%",
                   "compile s", "impl", "sampler", "BxT", "steps", "ms/step", "x twin", "x hoisted",
                   "1st call s"]  # fmt: skip


@pytest.mark.parametrize(
    "script, header, columns",
    [
        ("bench_train_step", "HEADER", TRAIN_COLUMNS),
        ("bench_sampling", "HEADER", SAMPLING_COLUMNS),
        ("gpu_summary", None, SUMMARY_COLUMNS),
        (
            "bench_solvers",
            "HEADER",
            ["sampler", "spacing", "steps", "rms feat", "rms pos", "s/call", "compile s"],
        ),
        (
            "bench_generate",
            "HEADER",
            ["mode", "calls", "programs", "frames run", "1st call s", "s", "x longest"],
        ),
    ],
)
def test_the_help_explains_every_column_of_the_tables(script, header, columns):
    """Each column of a script's printed table is named in its --help (its description, the module's
    docstring) as `name`, and the table's header prints that name."""
    sys.path.insert(0, str(BENCHMARKS))
    module = importlib.import_module(script)
    described = set(re.findall(r"`([^`]+)`", module.__doc__))
    assert [name for name in columns if name not in described] == []
    printed = getattr(module, header) if header else Path(module.__file__).read_text()
    assert [name for name in columns if f"'{name}'" not in printed and name not in printed] == []
    if header:  # each name is a column of its own in the header
        assert [name for name in columns if not re.search(rf"(^| ){re.escape(name)}( |$)", printed)] == []


@pytest.fixture
def quiet_common(monkeypatch):
    """common, its load check on 2 usable cores and this process's own CPU use left out (0)."""
    sys.path.insert(0, str(BENCHMARKS))
    import common
    import machine_load

    monkeypatch.setattr(machine_load, "usable_cpus", lambda: 2)
    monkeypatch.setattr(machine_load, "own_load", lambda: 0.0)
    monkeypatch.setattr(common, "_warned_busy", False)
    return common


def test_a_busy_machine_is_flagged_in_the_record_the_header_and_stderr(quiet_common, monkeypatch, capsys):
    """A 1-minute load average of 9 on 2 usable cores: the record's machine says busy, with the warning
    that the ratios are not meaningful, on stderr and in both benchmarks' headers; at 0.5 none of it."""
    common = quiet_common
    import bench_sampling
    import bench_train_step

    train_args = bench_train_step.parse_args(["--batch", "2"])
    sampling_args = argparse.Namespace(features=6, layers=2, latent=16, text_length=5, repeats=1, warmup=1)
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    machine = common.machine_info()
    assert machine["busy"] is True and machine["load_average_1m"] == 9.0 and machine["usable_cpus"] == 2
    (warning,) = machine["warnings"]
    assert "busy machine" in warning and "9.0" in warning and "2 usable cores" in warning
    assert "not meaningful" in warning
    assert warning in capsys.readouterr().err
    assert warning in bench_train_step.describe(train_args, machine).splitlines()
    assert warning in bench_sampling.describe(sampling_args, machine).splitlines()
    import machine_load  # the benchmarks without jax (pipeline, BVH) record the same

    record = machine_load.record_at_start()
    assert record["busy"] is True and record["warnings"] == [warning]
    assert warning in capsys.readouterr().err

    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    machine = common.machine_info()
    assert machine["busy"] is False and machine["warnings"] == []
    assert "busy" not in capsys.readouterr().err
    assert "WARNING" not in bench_train_step.describe(train_args, machine)
    assert "WARNING" not in bench_sampling.describe(sampling_args, machine)


def test_the_load_is_checked_again_at_the_end(quiet_common, monkeypatch, capsys):
    """Quiet at the start, busy at the end: the end's warning is added to the machine's, and busy set."""
    common = quiet_common
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    machine = common.machine_info()
    assert common.check_load_at_end(machine) is None and machine["busy"] is False
    assert machine["load_average_1m_end"] == 0.5 and machine["warnings"] == []
    monkeypatch.setattr(os, "getloadavg", lambda: (6.0, 6.0, 6.0))
    warning = common.check_load_at_end(machine)
    assert "busy machine at the end" in warning and machine["busy"] is True
    assert machine["warnings"] == [warning] and machine["load_average_1m_end"] == 6.0
    assert warning in capsys.readouterr().err


def test_the_load_check_leaves_out_the_benchmarks_own_cpu_use(monkeypatch):
    """After 10 minutes at 2 cores' worth of CPU, a load of 3.5 on 2 cores is 1.5 beside the benchmark:
    not busy; 5.0 is 3.0 beside it: busy."""
    sys.path.insert(0, str(BENCHMARKS))
    import time

    import machine_load

    monkeypatch.setattr(machine_load, "usable_cpus", lambda: 2)
    monkeypatch.setattr(machine_load, "_STARTED", (time.monotonic() - 600, machine_load.cpu_seconds() - 1200))
    monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 3.5, 3.5))
    check = machine_load.load_check()
    assert check["warning"] is None and check["load_beside_own_1m"] == pytest.approx(1.5, abs=0.05)
    monkeypatch.setattr(os, "getloadavg", lambda: (5.0, 5.0, 5.0))
    check = machine_load.load_check()
    assert check["warning"] and check["load_beside_own_1m"] == pytest.approx(3.0, abs=0.05)


def test_a_json_file_that_exists_is_never_overwritten(tmp_path, capsys):
    """write_json refuses a file it did not write in this process, naming --json and the file, and leaves
    it as it was; a file it wrote itself it rewrites (a benchmark rewrites its record as results come)."""
    sys.path.insert(0, str(BENCHMARKS))
    import common

    mine = tmp_path / "mine.json"
    common.write_json(mine, {"rows": [1]}, quiet=True)
    common.write_json(mine, {"rows": [1, 2]}, quiet=True)
    assert json.loads(mine.read_text()) == {"rows": [1, 2]}
    theirs = tmp_path / "theirs.json"
    theirs.write_text("a user's file\n")
    with pytest.raises(SystemExit, match=rf"--json {re.escape(str(theirs))}: that file exists"):
        common.write_json(theirs, {"rows": []})
    assert theirs.read_text() == "a user's file\n"
    assert not (tmp_path / "theirs.json.partial").exists()


def test_a_benchmark_refuses_an_existing_json_file_before_it_runs(tmp_path, capsys):
    """At argument parsing, before any benchmark time is spent: a usage error (exit 2) naming the flag and
    the file, which is left as it was (in this process and in a script run on its own)."""
    sys.path.insert(0, str(BENCHMARKS))
    import bench_train_step

    existing = tmp_path / "result.json"
    existing.write_text("{}\n")
    with pytest.raises(SystemExit) as stopped:
        bench_train_step.parse_args(["--json", str(existing)])
    assert stopped.value.code == 2
    assert f"--json {existing}: that file exists" in capsys.readouterr().err
    bench_train_step.parse_args(["--json", str(tmp_path / "new.json")])  # a new file is fine
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_bvh.py"), "--seconds", "1", "--json", str(existing)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and f"--json {existing}: that file exists" in result.stderr
    assert "BVH reader" not in result.stdout and existing.read_text() == "{}\n"


def test_the_headers_say_one_layer_repeat_and_warm_up_in_the_singular():
    """The headers read "1 layers x 16", "median of 1 interleaved repeats after 1 untimed calls"."""
    sys.path.insert(0, str(BENCHMARKS))
    import bench_sampling
    import bench_train_step

    machine = {"host_cpus": 2, "processor": "x", "jax_device": "cpu", "jax": "0", "load_average_1m": 0.1,
               "host_malloc": "default"}  # fmt: skip
    for n, s in ((1, ""), (2, "s")):
        sampling = argparse.Namespace(features=6, layers=n, latent=16, text_length=5, repeats=n, warmup=n)
        header = bench_sampling.describe(sampling, machine)
        assert f"D=6, {n} layer{s} x 16, L=5; median of {n} interleaved repeat{s} after {n} untimed" in header
        assert f" untimed call{s} of ours" in header, header
        train = bench_train_step.parse_args(["--layers", str(n), "--repeats", str(n), "--warmup", str(n)])
        said = " ".join(bench_train_step.describe(train, machine).split())
        assert f", {n} layer{s} x " in said, said
        assert f"median of {n} interleaved repeat{s} after {n} warm-up step{s}," in said, said


def test_train_step_rows_without_a_warm_up_are_marked_and_the_help_shows_the_defaults(capsys):
    """--warmup 0: the header says the first timed steps may not be at steady state and each row ends in
    `(no warm-up)`; with a warm-up neither. --help gives --geometric's and --memory's defaults."""
    sys.path.insert(0, str(BENCHMARKS))
    import bench_train_step

    row = {"case": "jax-fp32 D12", "median_s": 1.0, "samples_per_s": 2.0, "achieved_flops_per_s": 1e9}
    assert bench_train_step.format_row(row | {"warmup_rounds": 0}).endswith("(no warm-up)")
    assert "(no warm-up)" not in bench_train_step.format_row(row | {"warmup_rounds": 2})
    machine = {"host_cpus": 2, "processor": "x", "jax_device": "cpu", "jax": "0", "load_average_1m": 0.1,
               "host_malloc": "default"}  # fmt: skip
    unwarmed = bench_train_step.describe(bench_train_step.parse_args(["--warmup", "0"]), machine)
    assert "note: --warmup 0" in unwarmed and "steady state" in unwarmed
    assert "note:" not in bench_train_step.describe(bench_train_step.parse_args([]), machine)
    with pytest.raises(SystemExit):
        bench_train_step.parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    geometric = shown[shown.index("--geometric {off,on,both} ") :]
    assert "default: both" in geometric[: geometric.index("--repeats")]
    memory = shown[shown.index("--memory MEMORY ") :]
    assert "default: main" in memory[: memory.index("--memory-timeout")]


def minimal_train_record(backend: str, busy: bool = False) -> dict:
    """A train_step.json as bench_train_step.py writes it, cut to what gpu_summary.py reads: ours 3.5x the
    twin's autocast step."""
    warnings = ["WARNING: busy machine: 1-minute load average 7.0 ..."] if busy else []
    machine = {"jax_device": "cpu", "jax": "0.10.2", "date": "2026-12-06", "jax_backend": backend,
               "busy": busy, "warnings": warnings}  # fmt: skip
    rows = [
        {"case": f"{impl} D264", "impl": impl, "geometric": False, "features": 264, "num_params": 1e6,
         "median_s": seconds, "samples_per_s": 32 / seconds, "achieved_flops_per_s": 1e12 / seconds}
        for impl, seconds in (("jax-bf16", 1.0), ("torch-bf16", 3.5))
    ]  # fmt: skip
    rows[0]["speedup_vs_torch-bf16"] = 3.5
    return {"machine": machine, "args": {"batch": 32, "frames": 196, "repeats": 3}, "rows": rows}


def test_gpu_summary_judges_no_goal_from_a_dry_run_and_names_a_busy_machine(tmp_path, capsys):
    """A record made on jax's cpu backend: the report says it is a dry run and judges no goal ("meets the
    goal" would be a claim about a GPU from a CPU); on a GPU the goal is judged. A busy record is named."""
    sys.path.insert(0, str(BENCHMARKS))
    import gpu_summary

    for backend, busy in (("cpu", True), ("gpu", False)):
        folder = tmp_path / backend
        folder.mkdir()
        (folder / "train_step.json").write_text(json.dumps(minimal_train_record(backend, busy)))
        assert gpu_summary.main([str(folder), "--cases", "train_step"]) == 0
        report = capsys.readouterr().out
        if backend == "cpu":
            assert report.startswith("DRY RUN on cpu, not a GPU: ratios and MFU mean nothing")
            assert (
                "ours bf16 vs twin bf16 autocast: (dry run on cpu: not judged against the goal >= 3)"
                in report
            )
            assert "meets the goal" not in report and "WARNING: busy machine" in report
        else:
            assert "DRY RUN" not in report and "dry run" not in report and "WARNING" not in report
            assert "ours bf16 vs twin bf16 autocast: meets the goal (>= 3)" in report


def test_gpu_summary_reads_a_record_kept_under_another_name(tmp_path, capsys):
    """The H200 run of 2026-12-04 kept its products case as products_launch1.json: the report reads it and
    says so, and does not list products as missing. NAME_*.json is never another case's record
    (profile_variant.json is not profile's)."""
    sys.path.insert(0, str(BENCHMARKS))
    import gpu_summary

    h200 = BENCHMARKS / "results" / "h200-2026-12-04"
    assert not (h200 / "products.json").exists() and (h200 / "products_launch1.json").exists()
    assert gpu_summary.main([str(h200)]) == 0
    report = capsys.readouterr().out
    assert "products: read from products_launch1.json (no products.json)" in report
    assert "products alone: B=256" in report
    missing = next(line for line in report.splitlines() if line.startswith("no rows from:"))
    assert "products" not in missing.split(":", 1)[1].replace(" ", "").split(",")
    (tmp_path / "profile_variant.json").write_text(json.dumps({"complete": True, "machine": {}}))
    assert gpu_summary.load(tmp_path, "profile", "complete") is None
    assert gpu_summary.load(tmp_path, "profile_variant", "complete") == {"complete": True, "machine": {}}


def test_products_benchmark_times_every_product_of_the_step_and_both_steps(tmp_path):
    impls = ["jax"] + (["torch"] if HAVE_TORCH else [])
    record, stdout = run_benchmark(
        "bench_products.py",
        tmp_path,
        *("--batch", "2", "--frames", "6", "--features", "12", "--dtype", "bfloat16"),
        *("--impls", ",".join(impls), "--repeats", "1", "--step-repeats", "1", "--top", "5", *TINY),
    )
    assert record["complete"] and record["launches"] == 1  # a CPU waits for each product
    rows = record["rows"]
    # Every product of the traced step, counted once per call: the analytic count of the model's matmul
    # work (common.model_flops, a formula of the sizes) matches the products' sum, less small products
    # it leaves out (among them the folded LayerNorms' vector products): 3% at this tiny size, 0.2% at
    # full size.
    assert sum(row["count"] for row in rows) == record["products_per_step"]
    assert sum(row["gflop"] * row["count"] for row in rows) == pytest.approx(record["gflop_per_step"])
    assert record["gflop_per_step"] == pytest.approx(record["analytic_gflop_per_step"], rel=0.05)
    assert all(row[f"{impl}_s"] > 0 for row in rows for impl in impls)
    totals = record["products_alone_s_per_step"]
    for impl in impls:
        assert totals[impl] == pytest.approx(sum(row[f"{impl}_s"] * row["count"] for row in rows))
        assert record["step_s"][impl] > 0
    assert "the step's products alone, s" in stdout and f"({len(rows) - 5} more signatures" in stdout
    # By kind: every product in one kind; the motion tokens' (B*T = 12 rows) dominate, and the attention's
    # per-head products are the batched ones.
    kinds = {kind["kind"]: kind for kind in record["kinds"]}
    assert sum(kind["count"] for kind in kinds.values()) == record["products_per_step"]
    assert sum(kind["jax_s"] for kind in kinds.values()) == pytest.approx(totals["jax"])
    assert set(kinds) == {"motion tokens", "text tokens", "batched", "per example"}
    assert max(kinds.values(), key=lambda kind: kind["gflop"])["kind"] == "motion tokens"
    assert (
        all(row["batch"] > 1 for row in rows if row["product"].count("b(") == 2)
        and kinds["batched"]["count"] > 0
    )


def test_a_hoisted_sampler_step_is_counted_without_the_captions_once_per_call_work():
    """MotionDiffuse's size at 4 x 60 frames and 77 text tokens, by hand: our sampler computes each
    layer's cross-attention keys and values (2 W C per text token) and context (C h), and the caption's
    projection into the conditioning (W E per example), once per call; a step does the rest."""
    sys.path.insert(0, str(BENCHMARKS))
    import common

    from motion_ddpm_jax.config import base_config

    model = base_config().model
    b, frames, d, text = 4, 60, 264, 77
    c, w, e, layers, heads, ff = 512, 256, 2048, 8, 8, 1024
    assert (model.latent_dim, model.text_latent_dim, model.num_layers, model.num_heads) == (
        c,
        w,
        layers,
        heads,
    )
    assert model.ff_size == ff
    once = 2 * (b * w * e + b * text * layers * (2 * w * c + c * (c // heads)))
    full = common.model_flops(b, frames, d, text, model, encode_text=False)
    hoisted = common.model_flops(b, frames, d, text, model, encode_text=False, hoisted=True)
    assert hoisted["once"] == once == 1_457_520_640
    assert hoisted["forward"] == full["forward"] - once
    assert hoisted["forward"] / full["forward"] == pytest.approx(12.02 / 13.48, abs=1e-3)
    with pytest.raises(ValueError, match="encode_text=False"):
        common.model_flops(b, frames, d, text, model, hoisted=True)


def test_optimizer_benchmark_times_every_spelling_and_optax_agrees_with_ours(tmp_path):
    """bench_optimizer.py, which no other test runs: every implementation is timed in every round, and
    optax's own spelling of the update (an independent implementation of clipping, AdamW and the EMA's
    inputs) leaves the parameters where ours does after one update. A wrong update is off by about a
    step's size (AdamW's first step at the warm-up's learning rate: ~1e-5 per parameter); float32
    rounding of the same update by 1e-7 at most."""
    impls = ["jax", "jax-optax"] + (["torch"] if HAVE_TORCH else [])
    record, stdout = run_benchmark(
        "bench_optimizer.py", tmp_path, "--impls", ",".join(impls), "--rounds", "2", "--features", "12", *TINY
    )
    rows = {row["impl"]: row for row in record["rows"]}
    assert list(rows) == impls and record["num_params"] > 0
    assert all(len(row["seconds"]) == 2 and row["median_s"] > 0 for row in rows.values())
    assert rows["jax"]["max_param_difference"] == 0.0
    assert rows["jax-optax"]["max_param_difference"] < 1e-6
    assert "max |dparam|" in stdout and all(f"\n{impl} " in stdout for impl in impls)


def test_pipeline_benchmark_times_every_way_of_batching(tmp_path):
    record, stdout = run_benchmark(
        "bench_pipeline.py",
        tmp_path,
        *("--clips", "40", "--features", "6", "--batch", "8", "--frames", "20", "--batches", "3"),
        *("--repeats", "1"),
    )
    assert set(record["batches_per_s"]) == {
        "batch(step), 1 process",
        "batch(step), process 1 of 4",
        "prefetch(depth=2), 1 process",
    }
    assert all(rate > 0 for rate in record["batches_per_s"].values())
    assert {"busy", "warnings", "load_average_1m", "load_average_1m_end"} <= set(record["machine"])
    # Measured under the allocator settings training uses (launch.py tunes them on glibc).
    assert record["host_malloc"] in stdout


def test_bvh_benchmark_times_reading_and_kinematics(tmp_path):
    record, _ = run_benchmark("bench_bvh.py", tmp_path, "--seconds", "1", "--repeats", "1")
    assert record["frames"] == 120 and record["joints"] == 88
    assert set(record["seconds"]) == {
        "np.loadtxt of frames",
        "parse (load_bvh)",
        "positions()",
        "parse + positions",
    }
    assert all(times["median"] > 0 for times in record["seconds"].values())
    assert {"busy", "warnings", "load_average_1m", "load_average_1m_end"} <= set(record["machine"])


def test_profile_step_splits_the_step_by_kind_of_op(tmp_path):
    trace = tmp_path / "trace"
    record, stdout = run_benchmark(
        "profile_step.py",
        tmp_path,
        *("--batch", "2", "--frames", "6", "--features", "12", "--dtype", "float32", "--steps", "1"),
        *("--warmup", "0", "--trace-dir", str(trace), *TINY),
    )
    assert record["complete"] and record["module"] == "jit_train_step"
    kinds = {row["kind"]: row for row in record["kinds"]}
    assert {"matmul", "elementwise", "reduction"} <= set(kinds)
    assert record["op_ms_per_step"] > 0 and record["matched_ops"] == len(record["ops"])
    # The program's dots do the work the analytic count says (the count leaves out the loss's few).
    assert record["program_gflop_per_step"] == pytest.approx(record["analytic_gflop_per_step"], rel=0.1)
    assert (trace / "train_step.hlo.txt").is_file() and list(trace.rglob("perfetto_trace.json.gz"))
    assert "| kind | ms/step |" in stdout


def test_profile_step_profiles_a_variant(tmp_path):
    """--variant attention=block-diagonal reaches the profiled program: its products do the analytic
    count's FLOPs plus the block-diagonal ones' extra, (1 - 1/heads) x 2 B C^2 per frame, key and text token
    of each layer's context and read products, three times (forward and two gradients)."""
    batch, frames, text, width, heads, layers = 2, 6, 5, 16, 8, 1
    record, _ = run_benchmark(
        "profile_step.py",
        tmp_path,
        *("--batch", str(batch), "--frames", str(frames), "--features", "12", "--dtype", "float32"),
        *("--steps", "1", "--warmup", "0", "--variant", "attention=block-diagonal", *TINY),
        *("--heads", str(heads)),
    )
    extra = 3 * (1 - 1 / heads) * 2 * batch * width**2 * (3 * frames + text) * layers / 1e9
    expected = record["analytic_gflop_per_step"] + extra
    assert record["program_gflop_per_step"] == pytest.approx(expected, rel=0.02)
    assert record["args"]["variant"] == "attention=block-diagonal"
    bad = subprocess.run(
        [sys.executable, str(BENCHMARKS / "profile_step.py"), "--variant", "attention=nope"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown variant attention=nope" in bad.stderr


@pytest.mark.skipif(not HAVE_TORCH, reason="the GPU check times the torch twin: pip install -e '.[bench]'")
def test_gpu_check_runs_its_cases_and_summarises_them(tmp_path):
    """benchmarks/gpu_check.sh, the one prepared call for a lent GPU, as a dry run on the CPU with a tiny
    model: its benchmark command lines still parse and run, and its summary reads what they wrote
    (GPU time is rare: a flag renamed in a benchmark must not be found there)."""
    out = tmp_path / "out"
    env = {
        **{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"},
        "JAX_PLATFORMS": "cpu",
        "OUT": str(out),
        "PYTHON": sys.executable,
        "BUDGET_S": "2400",  # a busy machine ran the cases past 500 s and the last was skipped for time
        "BIG_BATCH": "4",
        "CASES": "train_step,big_batch,profile,pipelined,compile_flags,fp32,products,geometric,beat_window,"
        "variants,profile_variant,generate",
        "PROFILE_VARIANT": "attention=tokens-major",
        "GENERATE_ARGS": "--samples 12 --batch-size 4 --steps 2",
        "MODEL_ARGS": " ".join(TINY),
        "BENCH_ARGS": "--matmul-size 64",
        "BUNDLE_DIR": str(tmp_path / "bundle"),
    }
    result = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh")], capture_output=True, text=True, timeout=2700, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    summary = (out / "summary.txt").read_text()
    for case in (
        "train_step",
        "big_batch",
        "profile",
        "pipelined",
        "compile_flags",
        "fp32",
        "products",
        "geometric",
        "beat_window",
        "variants",
        "profile_variant",
        "generate",
    ):
        assert f"{case}: exit 0" in summary, summary
    beat = json.loads((out / "beat_window.json").read_text())
    assert beat["complete"] and beat["args"]["frames"] == 360
    assert {row["impl"] for row in beat["rows"]} == {"jax-bf16", "torch-bf16"}
    train = json.loads((out / "train_step.json").read_text())
    assert train["complete"] and {row["impl"] for row in train["rows"]} == {
        "jax-bf16",
        "torch-bf16",
        "torch-fp32",
    }
    pipelined = json.loads((out / "pipelined.json").read_text())
    assert pipelined["args"]["pipeline"] == 8 and pipelined["args"]["batch"] == 4
    assert all(row["steps_per_call"] == 8 for row in pipelined["rows"])
    variants = json.loads((out / "variants.json").read_text())
    assert [row["variant"] for row in variants["rows"]] == [
        "current",
        "read=pallas+style=pallas",
        "context=pallas+read=pallas+style=pallas",
        "standardize=saved-statistics",
        "attention=tokens-major",
        "xla:xla_disable_hlo_passes=triton-softmax-rewriter",
    ]
    assert variants["args"]["layers"] == 2 and variants["args"]["batch"] == 4
    fp32 = json.loads((out / "fp32.json").read_text())
    assert {row["impl"] for row in fp32["rows"]} == {"jax-fp32", "torch-fp32", "torch-bf16"}
    # The flag reaches that case alone, added to the caller's XLA_FLAGS.
    flagged = json.loads((out / "compile_flags.json").read_text())
    assert flagged["machine"]["xla_flags"] == "--xla_gpu_enable_triton_gemm=false"
    assert train["machine"]["xla_flags"] == ""
    report = (out / "report.txt").read_text()
    assert "ours bf16 vs twin bf16 autocast" in report and "MFU ours bf16" in report
    # A dry run on the CPU: no goal is claimed from it.
    assert report.startswith("DRY RUN on cpu, not a GPU") and "meets the goal" not in report
    assert "(dry run on cpu: not judged against the goal >= 3)" in report
    assert "BEAT's training window" in report and "float32 (TF32 products)" in report
    assert "ours bf16 with the flag / without (train_step)" in report
    assert "variants: B=4 bfloat16, 2 layers" in report
    assert (
        "pipelined: 8 steps per timed call" in report
        and "waited for each step (big_batch) / pipelined" in report
    )
    # The products alone, set against big_batch's steps of the same batch.
    assert "products alone: B=4" in report and "its whole step" in report
    assert (out / "profile_trace" / "train_step.hlo.txt").is_file()
    # The bundle: three files that hold everything.
    bundle = tmp_path / "bundle"
    assert sorted(p.name for p in bundle.iterdir()) == ["report.txt", "results.tgz", "trace.tgz"]
    with tarfile.open(bundle / "results.tgz") as results:
        names = results.getnames()
    assert "out/summary.txt" in names and "out/fp32.json" in names
    assert not any("profile_trace" in name or "profile_variant_trace" in name for name in names)
    with tarfile.open(bundle / "trace.tgz") as trace:
        assert {"profile_trace/train_step.hlo.txt", "profile_variant_trace/train_step.hlo.txt"} <= set(
            trace.getnames()
        )
    variant = json.loads((out / "profile_variant.json").read_text())
    assert variant["args"]["variant"] == "attention=tokens-major" and variant["args"]["layers"] == 2
    assert "profile_variant: attention=tokens-major, 2 layers" in report and "rel dgrad" in report
    # Without command buffers, so that a Pallas kernel's events name its op.
    assert variant["machine"]["xla_flags"] == "--xla_gpu_enable_command_buffer="
    generate = json.loads((out / "generate.json").read_text())
    assert [row["mode"] for row in generate["rows"]] == ["longest", "grouped"]
    assert generate["args"]["samples"] == 12 and generate["args"]["lengths"] == "uniform:40:196"
    assert "generate: 12 samples of uniform:40:196 frames" in report and "grouped       3" in report


def test_gpu_check_moves_an_earlier_runs_results_aside_and_bundles_as_it_goes(tmp_path):
    """A second call on a warm machine finds the first call's OUT: its files are kept under
    OUT.previous-TIME, and this call's report reads only its own results; the bundle holds them."""
    out, bundle = tmp_path / "out", tmp_path / "bundle"
    (out / "profile_variant_trace").mkdir(parents=True)
    (out / "variants.json").write_text('{"rows": [{"variant": "from the first call"}]}')
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": fast_compile_flags(),
        "OUT": str(out),
        "PYTHON": sys.executable,
        "BUDGET_S": "400",
        "BIG_BATCH": "2",
        "CASES": "variants,variants",  # named twice: run once, its first record kept
        "GPU_VARIANTS": "current,transpose=plain",
        # what is checked is the bookkeeping, not the step: 8 frames (argparse takes the later --frames),
        # and float32, in which transpose=plain changes nothing (it respells a bf16 gradient's transpose):
        # its program is current's, loaded from the check's compilation cache, not compiled again (the
        # variants' results in bf16: test_variants_benchmark_pairs_the_variants_and_checks_their_results)
        "MODEL_ARGS": " ".join([*TINY, "--frames", "8", "--dtype", "float32"]),
        "BUNDLE_DIR": str(bundle),
    }
    result = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh")], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    previous = [p for p in tmp_path.iterdir() if p.name.startswith("out.previous-")]
    assert len(previous) == 1 and "from the first call" in (previous[0] / "variants.json").read_text()
    assert (previous[0] / "profile_variant_trace").is_dir()
    variants = json.loads((out / "variants.json").read_text())
    assert variants["complete"] and [row["variant"] for row in variants["rows"]] == [
        "current",
        "transpose=plain",
    ]
    report = (bundle / "report.txt").read_text()
    assert "variants: B=2" in report and "from the first call" not in report
    assert "no rows from" not in report  # only the case asked for
    assert sorted(p.name for p in bundle.iterdir()) == ["report.txt", "results.tgz"]
    summary = (out / "summary.txt").read_text()
    assert summary.count("variants: exit 0") == 1 and "variants: named again in CASES, run once" in summary
    # No GPU here: the check says at its start, in its summary and in its report that this is a dry run.
    dry = "DRY RUN on cpu, not a GPU: ratios and MFU mean nothing"
    assert result.stdout.startswith(dry) or f"\n{dry}" in result.stdout
    assert summary.startswith(dry) and report.startswith(dry)
    assert "Traceback" not in (out / "env.txt").read_text()


def test_gpu_check_answers_help_without_running_anything(tmp_path):
    """--help (or -h) prints the header's usage, with the environment variables it reads, and runs
    nothing (no OUT made); another argument is refused, naming it."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out)}
    for flag in ("--help", "-h"):
        result = subprocess.run(
            ["bash", str(BENCHMARKS / "gpu_check.sh"), flag],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert result.returncode == 0 and result.stderr == ""
        for variable in ("OUT", "PYTHON", "BUDGET_S", "BIG_BATCH", "CASES", "MODEL_ARGS", "BENCH_ARGS",
                         "BUNDLE_DIR", "GPU_VARIANTS", "PROFILE_VARIANT"):  # fmt: skip
            assert variable in result.stdout
        assert result.stdout.startswith("One GPU check") and "#" not in result.stdout.split("\n", 1)[0]
        assert not out.exists()
    refused = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), "--budget"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert refused.returncode == 2 and "unknown argument '--budget'" in refused.stderr and not out.exists()


def test_solver_benchmark_measures_each_sampler_against_the_all_step_solution(tmp_path):
    """On an untrained tiny checkpoint (12 diffusion steps): DPM-Solver++ over all steps is the reference
    (distance 0), DDIM over all steps is the `ref gap` row, and a 3-step row's distance is the one
    computed here from `generate`'s samples (standardized, over the valid frames)."""
    from test_sampling import STEPS, write_checkpoint

    from motion_ddpm_jax import sampling

    write_checkpoint(tmp_path / "run")
    captions = "wave hello|point left"
    record, printed = run_benchmark(
        "bench_solvers.py",
        tmp_path,
        *("--workdir", str(tmp_path / "run"), "--steps", f"3,{STEPS}", "--captions", captions),
        *("--num-samples", "2", "--frames", "8", "--repeats", "0"),
    )
    rows = {(r["sampler"], r["spacing"], r["steps"]): r for r in record["rows"]}
    assert len(rows) == 1 + 2 * 4 and "rms feat" in printed
    assert rows["dpmpp_2m", "trailing", STEPS]["rms_features"] == 0.0
    assert rows["dpmpp_2m", "trailing", STEPS]["rms_positions"] == 0.0
    gap = rows["ref gap", "all", STEPS]
    assert gap["rms_features"] == rows["ddim", "leading", STEPS]["rms_features"] > 0

    loaded = sampling.load_model(tmp_path / "run")
    request = dict(captions=captions.split("|"), num_frames=8, num_samples=2)
    reference = sampling.generate(loaded, **request, sampler="dpmpp_2m", steps=STEPS, spacing="trailing")
    three = sampling.generate(loaded, **request, sampler="ddim", steps=3, spacing="trailing")
    std = np.asarray(loaded.std, np.float64)
    difference = (three["motion"].astype(np.float64) - reference["motion"]) / std  # [N, T, D], all valid
    expected = np.sqrt(np.mean(difference**2))
    assert rows["ddim", "trailing", 3]["rms_features"] == pytest.approx(expected, rel=1e-5)

    # What was measured: the checkpoint's step as its folder is named, its diffusion settings as its saved
    # config has them, EMA parameters (the default), and the request.
    on_disk = checkpoint_steps(tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "checkpoints" / "3" / "metadata" / "metadata").read_text())
    assert record["workdir"] == str(tmp_path / "run")
    assert (record["step"], record["use_ema"]) == (on_disk[-1], True)
    assert record["diffusion_steps"] == saved["config"]["diffusion"]["steps"] == STEPS
    assert record["diffusion_schedule"] == saved["config"]["diffusion"]["schedule"] == "cosine"
    assert (record["captions"], record["num_samples"], record["num_frames"]) == (captions.split("|"), 2, 8)
    assert (record["guidance_scale"], record["seed"]) == (1.0, 0)
    assert record["software"]["jax"] == importlib.metadata.version("jax")
    assert {"git_commit", "git_dirty", "device_kind", "xla_flags"} <= set(record["software"])
    assert f"{tmp_path / 'run'} step {on_disk[-1]}, EMA parameters, {STEPS} diffusion steps" in printed


def checkpoint_steps(workdir: Path) -> list[int]:
    """The steps of `workdir`'s checkpoints, as their folders are named."""
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_solver_benchmark_measures_the_checkpoint_step_and_parameters_it_is_given(
    tmp_path, monkeypatch, capsys
):
    """--checkpoint-step and --no-use-ema choose the parameters the samplers run (two checkpoints, four
    distinct parameter trees: the one measured is the one written under that step and name), the record
    and the header say which, and a step the workdir does not hold is a usage error that names the flag,
    the checkpoint folder and the steps it holds. The samplers are not run (`measure` is replaced)."""
    import jax
    from test_sampling import STEPS, write_checkpoint

    from motion_ddpm_jax import checkpoint

    run = tmp_path / "run"
    raw, ema, metadata = write_checkpoint(run, step=2)
    written = {
        "step 2 raw": raw,
        "step 2 EMA": ema,
        "step 3 raw": jax.tree.map(lambda a: np.asarray(a) + 1, ema),
        "step 3 EMA": jax.tree.map(lambda a: np.asarray(a) - 1, ema),
    }
    writer = checkpoint.Checkpointer(run)
    writer.save(3, written["step 3 raw"], written["step 3 EMA"], {"step": np.int32(3)}, metadata)
    writer.close()
    assert checkpoint_steps(run) == [2, 3]

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench_solvers = importlib.import_module("bench_solvers")
    measured = []

    def no_sampling(loaded, request, sampler, steps, spacing, repeats):
        measured.append(loaded.params)
        shape = (len(request["captions"]) * request["num_samples"], request["num_frames"], loaded.mean.size)
        out = {
            "motion": np.zeros(shape, np.float32),
            "lengths": np.full(shape[0], shape[1]),
            "positions": None,
        }
        return out, {"median_s": None, "first_call_s": 0.0}

    monkeypatch.setattr(bench_solvers, "measure", no_sampling)

    def which(params) -> list[str]:
        return [
            name
            for name, tree in written.items()
            if jax.tree.structure(tree) == jax.tree.structure(params)
            and all(
                np.array_equal(a, b)
                for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(params), strict=True)
            )
        ]

    request = ["--workdir", str(run), "--steps", "3", "--frames", "4", "--num-samples", "1", "--repeats", "0"]
    for flags, name, step, use_ema in (
        ([], "step 3 EMA", 3, True),
        (["--no-use-ema"], "step 3 raw", 3, False),
        (["--checkpoint-step", "2"], "step 2 EMA", 2, True),
        (["--checkpoint-step", "2", "--no-use-ema"], "step 2 raw", 2, False),
    ):
        measured.clear()
        out = tmp_path / f"{name.replace(' ', '_')}.json"
        bench_solvers.main([*request, *flags, "--json", str(out)])
        names = [which(params) for params in measured]  # one per sampler call
        assert names and names == [[name]] * len(names), flags
        record = json.loads(out.read_text())
        assert (record["step"], record["use_ema"], record["diffusion_steps"]) == (step, use_ema, STEPS)
        kind = "EMA" if use_ema else "raw"
        assert f"{run} step {step}, {kind} parameters" in capsys.readouterr().out

    out = tmp_path / "missing.json"
    with pytest.raises(SystemExit) as stopped:
        bench_solvers.main([*request, "--checkpoint-step", "7", "--json", str(out)])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and not out.exists()
    assert f"--checkpoint-step 7: {run / 'checkpoints'}" in error
    assert f"no checkpoint at step 7; available: {checkpoint_steps(run)}" in error


def test_generate_benchmark_counts_the_calls_programs_and_frames_of_each_mode(tmp_path, monkeypatch, capsys):
    """bench_generate on a tiny model, 10 samples of lengths 3, 9, 5, 12, 7 (repeated), 4 a call, buckets
    of 4 frames: the longest mode runs 3 calls of 12 frames (144 frames for the samples' 72); the grouped
    one calls of [3, 3] (+2 repeats) at 4, [5, 5, 7, 7] at 8, [9, 9, 12, 12] at 12: 3 programs, 96
    frames (the short call first, its repeats at 4 frames, not 12); the two modes' samples the same."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench_generate = importlib.import_module("bench_generate")
    monkeypatch.setattr(bench_generate.sampling, "LENGTH_BUCKET", 4)
    traced = []  # the frames of each sampler program traced (one per program compiled)
    real_loop = bench_generate.sampling.diffusion.ddim_sample_loop

    def counting_loop(schedule, denoise, x_T, *args, **kwargs):
        traced.append(x_T.shape[-2])
        return real_loop(schedule, denoise, x_T, *args, **kwargs)

    monkeypatch.setattr(bench_generate.sampling.diffusion, "ddim_sample_loop", counting_loop)
    out = tmp_path / "generate.json"
    flags = ["--samples", "10", "--batch-size", "4", "--lengths", "3,9,5,12,7", "--steps", "2"]
    cache_was_on = bench_generate.jax.config.jax_enable_compilation_cache
    try:  # (the benchmark turns jax's persistent cache off for its process: this one's is restored)
        bench_generate.main(
            [
                *flags,
                "--diffusion-steps",
                "30",
                "--features",
                "6",
                "--repeats",
                "1",
                *TINY,
                "--json",
                str(out),
            ]
        )
        assert not bench_generate.jax.config.jax_enable_compilation_cache
    finally:
        bench_generate.jax.config.update("jax_enable_compilation_cache", cache_was_on)
    record = json.loads(out.read_text())
    rows = {row["mode"]: row for row in record["rows"]}
    # each mode's first call compiles every program it runs (grouped: its 12-frame one too, not the
    # longest mode's again); the timed calls after them none
    assert traced == [12, 4, 8, 12]
    assert record["lengths"] == [3, 9, 5, 12, 7] * 2
    assert (rows["longest"]["calls"], rows["longest"]["programs"], rows["longest"]["frames_run"]) == (
        3,
        1,
        144,
    )
    assert (rows["grouped"]["calls"], rows["grouped"]["programs"], rows["grouped"]["frames_run"]) == (
        3,
        3,
        96,
    )
    assert rows["grouped"]["frames_run_over_own"] == pytest.approx(96 / 72)
    assert all(row["median_s"] > 0 and row["first_call_s"] > 0 for row in rows.values())
    assert rows["longest"]["x_longest"] == 1.0
    # The modes agree to float rounding, on a model that reads its frames: initial parameters output
    # exactly 0 (every sample x_T / sqrt(abar), a max diff of 0 by construction), the benchmark's do not
    assert record["max_diff"] <= 1e-5 * record["max_abs"]
    args = types.SimpleNamespace(**record["args"])
    loaded = bench_generate.untrained_model(args, 12)
    tokens, token_mask = loaded.tokenizer.encode(["claps"], args.text_length)
    x = np.random.default_rng(0).normal(size=(1, 12, 6)).astype(np.float32)
    variables, mask = {"params": loaded.params}, np.ones((1, 12), bool)
    output = loaded.model.apply(variables, x, np.array([7]), tokens, token_mask, mask)
    assert np.abs(np.asarray(output)).max() > 1e-3
    printed = capsys.readouterr().out
    assert bench_generate.HEADER in printed and "max diff" in printed
    with pytest.raises(SystemExit) as stopped:
        bench_generate.main([*flags, "--lengths", "uniform:9:3", *TINY])
    assert (
        stopped.value.code == 2 and "--lengths 'uniform:9:3': need 1 <= LO <= HI" in capsys.readouterr().err
    )
