"""The summary of one benchmarks/gpu_check.sh run: the key numbers of the JSON records it left in a folder,
set against the issue's goals. Works on partial records (a case cut at its time limit) and missing ones.

    python benchmarks/gpu_summary.py OUT_DIR [--cases NAME,NAME,...]

--cases: the cases the check was asked to run (gpu_check.sh passes its CASES): only those are listed as
missing when they left no rows. A case's record is OUT_DIR/NAME.json; where there is none, a renamed
one, NAME_SOMETHING.json (e.g. products_launch1.json, a record kept under another name), is read
instead and the report says so.

A record made off a GPU (its machine's jax backend is not gpu: a dry run of the check on a CPU, such as
tests/test_benchmarks.py's) is summarised all the same, but the report says so first and judges no goal
("dry run"): its ratios and MFU say nothing about a GPU. A record taken on a busy machine (the
benchmark's `busy` warning: the load beside it above the usable cores) is named at the top.

Columns of the train-step tables: `case` the implementation and feature size; `s/step` the median
seconds per step; `samples/s` the batch over that; `x twin32`, `x twin16` and `x tc16` the twin's median
time over this row's (above 1: this row is faster) for the twin's float32 eager step, its eager bf16
autocast step and its bf16 autocast step under torch.compile, where the case ran that twin ("-" where
not); `TFLOP/s` the analytic matmul FLOPs per second; `MFU%` that over the card's bf16 matmul rate
measured in the same run; `compile s` ours' compile seconds (torch.compile's: its first call).
The sampling table: `impl`, `sampler`, `BxT` (samples x frames), `steps` (denoiser calls), `s` (the
median time of the whole sampler, seconds), `ms/step`, `x twin` and `x hoisted` (the twin's loop of the
same precision, as is and hoisting what ours hoists, over this row's time), `compile s`, `1st call s`
(compile + the first execution). The variants table: `s/step`, `vs FIRST` (the first variant's time
over this one's), `max |dparam|`, `d grad_norm` and `rel dgrad` (how far the variant's step is from the
first's: bench_variants.py's --help), `compile s`. The profile tables: per kind of op its `ms/step`, its
`share` of the op time, its `ops` and `TFLOP/s`; then the top ops. The products table: each product's
`count` per step and its time alone per library (`jax ms`, `torch ms`).

Reads only the standard library (no jax, no torch): it runs in a second, after everything else.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

GOAL_SPEEDUP = 3.0  # ours vs the twin's AMP (bf16 autocast) train step, and vs its DDPM-1000 loop
GOAL_MFU = 0.40  # at the large batch
TWIN_AMP = "speedup_vs_torch-bf16"
CASES = (  # gpu_check.sh's benchmark cases with rows (the profile is read on its own)
    "train_step", "big_batch", "pipelined", "compile_flags", "fp32", "geometric", "beat_window", "sampling",
    "autotune_off", "torch_compile", "products", "variants", "generate",
)  # fmt: skip


PROFILES = ("profile", "profile_variant")  # gpu_check.sh's profile_step.py cases


def load(folder: Path, name: str, field: str = "rows") -> dict | None:
    """NAME.json's record where it has `field` (a benchmark's rows; the profile's "complete"), else None.
    Without NAME.json, the first of NAME_*.json (a record kept under another name, such as
    products_launch1.json; never another case's, such as profile_variant.json) that has it, its file name
    in the record's "_read_from"."""
    path = folder / f"{name}.json"
    if not path.exists():
        known = set(CASES) | set(PROFILES)
        renamed = sorted(p for p in folder.glob(f"{name}_*.json") if p.stem not in known)
        for candidate in renamed:
            record = read(candidate, field)
            if record:
                return record | {"_read_from": candidate.name}
        return None
    return read(path, field)


def read(path: Path, field: str) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get(field) else None


def tflops(value) -> str:
    return "-" if value is None else f"{value / 1e12:.1f}"


def fmt(value, pattern: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(scale * value, pattern)


def status(record: dict) -> str:
    return "" if record.get("complete", True) else "  [PARTIAL: cut short, finished rows only]"


DRY_RUN: str | None = None  # main sets it: the jax backend of a run made off a GPU, else None


def verdict(value, goal: float) -> str:
    if value is None:
        return "-"
    if DRY_RUN:
        return f"(dry run on {DRY_RUN}: not judged against the goal >= {goal:g})"
    return f"{'meets' if value >= goal else 'BELOW'} the goal (>= {goal:g})"


def train_table(record: dict, title: str) -> None:
    args = record["args"]
    rows = record["rows"]
    print(
        f"\n{title}: B={args['batch']} T={args['frames']} D={rows[0]['features']}, "
        f"{rows[0].get('num_params', 0) / 1e6:.1f}M params, median of {args['repeats']}{status(record)}"
    )
    print(
        f"  {'case':<26}{'s/step':>8}{'samples/s':>10}{'x twin32':>9}{'x twin16':>9}{'x tc16':>8}"
        f"{'TFLOP/s':>9}{'MFU%':>6}{'compile s':>10}"
    )
    for row in rows:
        print(
            f"  {row['case']:<26}{row['median_s']:>8.4f}{row['samples_per_s']:>10.1f}"
            f"{fmt(row.get('speedup_vs_torch-fp32'), '.2f'):>9}"
            f"{fmt(row.get('speedup_vs_torch-bf16'), '.2f'):>9}"
            f"{fmt(row.get('speedup_vs_torch-compile-bf16'), '.2f'):>8}"
            f"{tflops(row['achieved_flops_per_s']):>9}{fmt(row.get('mfu'), '.1f', 100):>6}"
            f"{fmt(row.get('compile_s'), '.1f'):>10}"
        )


def profile_table(record: dict, top: int = 12, title: str = "profile") -> None:
    """Where the profiled step's time went (benchmarks/profile_step.py): per kind of op, the top ops."""
    args = record["args"]
    wall_ms = 1e3 * record["wall_median_s"]
    variant = f" {args['variant']}," if args.get("variant") and args["variant"] != "current" else ""
    layers = f" {args['layers']} layers," if args.get("layers") else ""
    print(
        f"\n{title}:{variant}{layers} B={args['batch']} {record['dtype']}, wall {wall_ms:.1f} ms/step, "
        f"op time {record['op_ms_per_step']:.1f} ms/step ({record['op_ms_per_step'] / wall_ms:.0%} of wall), "
        f"busy {fmt(record.get('busy_ms_per_step'), '.1f')} ms/step; "
        f"products {fmt(record.get('program_gflop_per_step'), '.0f')} GFLOP/step "
        f"(analytic {fmt(record.get('analytic_gflop_per_step'), '.0f')})"
    )
    print(f"  {'kind':<16}{'ms/step':>9}{'share':>8}{'ops':>6}{'TFLOP/s':>9}")
    for row in record["kinds"]:
        share = "-" if row["kind"] == "control" else f"{row['share']:.1%}"
        gflop = row.get("gflop_per_step")
        rate = gflop / row["ms_per_step"] if gflop and row["ms_per_step"] else None
        print(f"  {row['kind']:<16}{row['ms_per_step']:>9.2f}{share:>8}{row['ops']:>6}{fmt(rate, '.1f'):>9}")
    print(f"  top {top} ops:")
    for row in record["ops"][:top]:
        source = row.get("source", "")[-60:]
        print(f"    {row['ms_per_step']:8.3f} ms  {row['kind']:<15}{row['op']:<28}{source}")


def products_table(record: dict, steps: dict[str, float], top: int = 8) -> None:
    """The step's products timed alone (benchmarks/bench_products.py), against whole steps of the same
    size: `steps` {framework: seconds} from the record itself or from big_batch."""
    args = record["args"]
    print(
        f"\nproducts alone: B={args['batch']} T={args['frames']} {args['dtype']}, "
        f"{record['products_per_step']} products of {len(record['rows'])} signatures timed, "
        f"{record['gflop_per_step']:.0f} GFLOP/step{status(record)}"
    )
    launches = record.get("launches")  # absent before 2026-12-04: one launch and one wait per product
    print(
        f"  each timing: {launches or 1} launch(es) back to back, one wait"
        + ("" if launches and launches > 1 else " (on a GPU the launch and the wait dominate small products)")
    )
    for impl, seconds in record.get("products_alone_s_per_step", {}).items():
        line = (
            f"  {impl}: {1e3 * seconds:.2f} ms/step at {record['gflop_per_step'] / seconds / 1e3:.1f} TFLOP/s"
        )
        if steps.get(impl):
            share = seconds / steps[impl]
            line += f"; its whole step {1e3 * steps[impl]:.2f} ms: the products alone are {share:.0%}"
        print(line)
    impls = [impl for impl in ("jax", "torch") if f"{impl}_s" in record["rows"][0]]
    print(f"  {'product':<64}{'count':>6}" + "".join(f"{impl + ' ms':>10}" for impl in impls))
    for row in sorted(record["rows"], key=lambda r: -r["jax_s"] * r["count"])[:top]:
        cells = "".join(f"{1e3 * row[f'{impl}_s']:>10.3f}" for impl in impls)
        print(f"  {row['product'][:63]:<64}{row['count']:>6}{cells}")


def row_of(record: dict | None, impl: str, geometric: bool = False) -> dict | None:
    for row in (record or {}).get("rows", []):
        if row["impl"] == impl and row["geometric"] == geometric:
            return row
    return None


def large_batch_goals(record: dict) -> dict | None:
    """Print ours bf16 against both goals (the twin's AMP step, MFU); returns our row (None if absent)."""
    ours, twin = row_of(record, "jax-bf16"), row_of(record, "torch-bf16")
    if ours:
        print(f"  ours bf16 vs twin bf16 autocast: {verdict(ours.get(TWIN_AMP), GOAL_SPEEDUP)}")
        print(
            f"  MFU ours bf16 {fmt(ours.get('mfu'), '.1f', 100)}% "
            f"({verdict(ours.get('mfu'), GOAL_MFU)}); "
            f"twin {fmt((twin or {}).get('mfu'), '.1f', 100)}%; reference {ours.get('mfu_reference')}"
        )
    return ours


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gpu_summary.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path, help="the OUT folder of a gpu_check.sh run")
    parser.add_argument(
        "--cases",
        default=None,
        help="comma-separated: the cases the check was asked to run (only those are listed as missing)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    global DRY_RUN
    args = parse_args(argv)
    asked = None if args.cases is None else {name for name in args.cases.split(",") if name}
    folder = args.folder
    records = {name: load(folder, name) for name in CASES}
    profiles = {name: load(folder, name, "complete") for name in PROFILES}
    present = [record for record in [*records.values(), *profiles.values()] if record]
    if not present:
        print(f"no results in {folder}" + ("" if folder.is_dir() else " (not a folder)"))
        return 1
    machine = present[0]["machine"]
    backends = {record["machine"].get("jax_backend") for record in present} - {None}
    DRY_RUN = ",".join(sorted(backends - {"gpu"})) or None
    if DRY_RUN:
        print(f"DRY RUN on {DRY_RUN}, not a GPU: ratios and MFU mean nothing, and no goal is judged")
    busy = next(
        (w for r in present for w in r["machine"].get("warnings", []) if r["machine"].get("busy")), None
    )
    if busy:
        print(f"{busy} (in {sum(bool(r['machine'].get('busy')) for r in present)} of the records)")
    print(
        f"{machine.get('torch_device_name') or machine['jax_device']}; jax {machine['jax']}, "
        f"torch {machine.get('torch', '-')}; {machine['date']}"
    )
    for name, record in {**records, **profiles}.items():
        if record and "_read_from" in record:
            print(f"{name}: read from {record['_read_from']} (no {name}.json)")
    floors = next(
        (r["matmul_floor_flops_per_s"] for r in records.values() if r and "matmul_floor_flops_per_s" in r), {}
    )
    if floors:
        print(
            "matmul floor (TFLOP/s): "
            + ", ".join(
                f"{k} {v / 1e12:.3g} (n={floors[k + '_n']})" for k, v in floors.items() if "_n" not in k
            )
        )

    if records["train_step"]:
        train_table(records["train_step"], "train step")
        ours = row_of(records["train_step"], "jax-bf16")
        if ours:
            print(f"  ours bf16 vs twin bf16 autocast: {verdict(ours.get(TWIN_AMP), GOAL_SPEEDUP)}")
    if records["big_batch"]:
        train_table(records["big_batch"], "big batch")
        large_batch_goals(records["big_batch"])
    if records["pipelined"]:
        record = records["pipelined"]
        steps = record["args"].get("pipeline", 1)
        train_table(record, f"pipelined: {steps} steps per timed call, waited for once (as launch.py)")
        ours = large_batch_goals(record)
        waited = row_of(records["big_batch"], "jax-bf16") if records["big_batch"] else None
        if ours and waited and waited["features"] == ours["features"]:
            print(
                f"  ours bf16 per step, waited for each step (big_batch) / pipelined: "
                f"{waited['median_s'] / ours['median_s']:.2f}x"
            )
    for name, flag in (
        ("compile_flags", "--xla_gpu_enable_triton_gemm=false"),
        ("autotune_off", "--xla_gpu_autotune_level=0"),
    ):
        if records[name]:
            train_table(records[name], f"XLA_FLAGS={flag}")
            flagged, plain = row_of(records[name], "jax-bf16"), row_of(records["train_step"], "jax-bf16")
            if flagged and plain:
                print(
                    f"  ours bf16 with the flag / without (train_step): step time "
                    f"{flagged['median_s'] / plain['median_s']:.2f}x, compile "
                    f"{fmt(flagged.get('compile_s'), '.1f')} s vs {fmt(plain.get('compile_s'), '.1f')} s"
                )
    if records["fp32"]:
        train_table(records["fp32"], "float32 (TF32 products)")
    if records["geometric"]:
        train_table(records["geometric"], "geometric term")
        on = row_of(records["geometric"], "jax-bf16", True)
        if on and "geometric_overhead" in on:
            print(f"  bone-length term overhead, ours bf16: {100 * on['geometric_overhead']:+.1f}%")
        print("  (gpu_check.sh: the step without the term comes from train_step's compilation, cached)")
    if records["beat_window"]:
        train_table(records["beat_window"], "BEAT's training window (configs/beat.py)")
        ours = row_of(records["beat_window"], "jax-bf16")
        if ours:
            print(f"  ours bf16 vs twin bf16 autocast: {verdict(ours.get(TWIN_AMP), GOAL_SPEEDUP)}")
    if records["sampling"]:
        record = records["sampling"]
        print(
            f"\nsampling: D={record['args']['features']}, "
            f"median of {record['args']['repeats']}{status(record)}"
        )
        print(
            f"  {'impl':<19}{'sampler':<8}{'BxT':>8}{'steps':>6}{'s':>9}{'ms/step':>9}{'x twin':>8}"
            f"{'x hoisted':>10}{'compile s':>10}{'1st call s':>11}"
        )
        for row in record["rows"]:
            speedup = row.get("speedup_vs_twin_same_precision")
            goal = (
                f"  {verdict(speedup, GOAL_SPEEDUP)}"
                if row["sampler"] == "ddpm" and row["steps"] == 1000 and speedup
                else ""
            )
            print(
                f"  {row['impl']:<19}{row['sampler']:<8}{str(row['batch']) + 'x' + str(row['frames']):>8}"
                f"{row['steps']:>6}{row['median_s']:>9.3f}{row['per_step_ms']:>9.2f}{fmt(speedup, '.2f'):>8}"
                f"{fmt(row.get('speedup_vs_hoisted_twin_same_precision'), '.2f'):>10}"
                f"{fmt(row.get('compile_s'), '.1f'):>10}{fmt(row.get('first_call_s'), '.1f'):>11}{goal}"
            )
    if records["torch_compile"]:
        train_table(records["torch_compile"], "torch.compile")
        compiled = row_of(records["torch_compile"], "torch-compile-bf16")
        eager, ours = row_of(records["train_step"], "torch-bf16"), row_of(records["train_step"], "jax-bf16")
        if compiled and eager:
            print(f"  torch.compile bf16 vs twin eager bf16: {eager['median_s'] / compiled['median_s']:.2f}x")
        if compiled and ours:
            print(f"  ours bf16 vs torch.compile bf16: {compiled['median_s'] / ours['median_s']:.2f}x")
    if records["products"]:
        record = records["products"]
        steps = dict(record.get("step_s") or {})
        big = records["big_batch"]
        if not steps and big and big["args"]["batch"] == record["args"]["batch"]:
            for framework in ("jax", "torch"):
                row = row_of(big, f"{framework}-bf16")
                if row:
                    steps[framework] = row["median_s"]
        products_table(record, steps)
    if records["variants"]:
        variants_table(records["variants"])
    if records["generate"]:
        generate_table(records["generate"])
    for name, profile in profiles.items():
        if profile:
            profile_table(profile, title=name)
    missing = [name for name, record in {**records, **profiles}.items() if record is None]
    if asked is not None:
        missing = [name for name in missing if name in asked]
    if missing:
        print(f"\nno rows from: {', '.join(missing)}")
    return 0


def generate_table(record: dict) -> None:
    """bench_generate.py's two modes: every call at the longest length, calls grouped by length."""
    args = record["args"]
    lengths = record.get("lengths") or [0]
    print(
        f"\ngenerate: {args['samples']} samples of {args['lengths']} frames (longest {max(lengths)}), "
        f"{args['batch_size']} a call, {args['sampler']} {args['steps']} steps, {args['dtype']}"
        + status(record)
    )
    print(
        f"  {'mode':<9}{'calls':>6}{'programs':>9}{'frames run':>11}{'1st call s':>11}{'s':>9}"
        f"{'x longest':>10}"
    )
    for row in record["rows"]:
        print(
            f"  {row['mode']:<9}{row['calls']:>6}{row['programs']:>9}{row['frames_run_over_own']:>10.2f}x"
            f"{row['first_call_s']:>11.1f}{fmt(row['median_s'], '.3f'):>9}"
            f"{fmt(row['x_longest_first'], '.2f'):>6} / {fmt(row['x_longest'], '.2f')}"
        )
    if record.get("max_diff") is not None:
        largest = record.get("max_abs")
        print(
            f"  max diff between the modes' samples {record['max_diff']:.2e}"
            + ("" if largest is None else f" (largest |value| {largest:.3g})")
        )
    print(
        "  (x longest: first call, compiling included / later calls; generate groups by length by default "
        "on a CPU only)"
    )


def variants_table(record: dict) -> None:
    """bench_variants.py's rows: each variant's step time against the first's, whether it computes the same
    step (max |dparam|, d grad_norm, rel dgrad: bench_variants' docstring), its compile time; a record cut
    short holds compile times only."""
    args = record["args"]
    print(
        f"\nvariants: B={args['batch']} {args['dtype']}, {args['layers']} layers, median of "
        f"{args['rounds']} paired rounds{status(record)}"
    )
    base = record["rows"][0]
    width = max(22, *(len(row["variant"]) + 2 for row in record["rows"]))
    print(
        f"  {'variant':<{width}}{'s/step':>9}{'vs ' + base['variant']:>14}{'max |dparam|':>14}"
        f"{'d grad_norm':>12}{'rel dgrad':>10}{'compile s':>10}"
    )
    for row in record["rows"]:
        timed = row.get("median_s") is not None and base.get("median_s") is not None
        speed = f"{base['median_s'] / row['median_s']:>13.3f}x" if timed else f"{'-':>14}"
        print(
            f"  {row['variant']:<{width}}{fmt(row.get('median_s'), '.4f'):>9}{speed}"
            f"{fmt(row.get('max_param_difference'), '.3g'):>14}"
            f"{fmt(row.get('grad_norm_relative_difference'), '.2g'):>12}"
            f"{fmt(row.get('gradient_relative_difference'), '.2g'):>10}{fmt(row.get('compile_s'), '.1f'):>10}"
        )
    for name, why in record.get("failed", {}).items():
        print(f"  {name}: did not compile ({why})")
    for name, why in record.get("skipped", {}).items():
        print(f"  {name}: {why}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
