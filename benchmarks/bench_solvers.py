"""Sampler accuracy per step: how close DDIM and DPM-Solver++(2M) get, at a few steps, to the exact
deterministic sample of a trained checkpoint, and what each costs.

    .venv/bin/python benchmarks/bench_solvers.py --workdir runs/demo [--checkpoint-step -1]
        [--use-ema | --no-use-ema] [--steps 5,10,20,50] [--captions 'wave|nod'] [--num-samples 4]
        [--frames 60] [--guidance 1] [--seed 0] [--json FILE]

The checkpoint is the workdir's latest with its EMA parameters, as --mode sample reads it
(--checkpoint-step and --no-use-ema: launch.py's sample.checkpoint_step and sample.use_ema=False). The
header and the JSON say what was measured: the workdir, the checkpoint's step, EMA or raw parameters,
its diffusion steps and schedule, the captions, frames, guidance and seed, and the software (the
`software` record that run.json and --mode eval's metrics hold: versions, git commit, device).

DDIM (eta 0) and DPM-Solver++(2M) both solve the probability-flow ODE from the same starting noise (the
same seed), so with more steps both approach one sample: the reference here is DPM-Solver++(2M) over every
diffusion step of the run (trailing spacing), and the `ref gap` row DDIM over every step as well: the
first-order solver against the second-order one, both at the finest steps the schedule has, mostly
DDIM's own error there (a loose upper bound of the reference's). The DDPM sampler (ancestral, new noise
each step) has no such limit and is not compared.

Columns: `sampler`, `spacing` (diffusion.ddim_timesteps), `steps`, `rms feat` the root mean square
difference from the reference of the standardized features over the valid frames (1 = the data's
standard deviation), `rms pos` the same for the joint positions in the data's units (cm for BEAT and
the demo set, metres for HumanML3D; blank without a skeleton), `s/call` the median time of one
`sampling.generate` call after a warm-up call (compilation is reported apart, as `compile s`: the first
call's time). The error of few steps starts where the first step takes the noise (`spacing_note`): a
leading first step at t < T - 1 is measured against a reference that starts at T - 1, which is the
sample a user asked for.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import common  # noqa: F401 - sets up jax's allocation and the path before jax loads
import jax
import numpy as np

from motion_ddpm_jax import checkpoint, provenance, sampling

HEADER = (
    f"{'sampler':<10}{'spacing':<10}{'steps':>6}{'rms feat':>10}{'rms pos':>10}{'s/call':>9}{'compile s':>10}"
)


def _standardized(out, loaded) -> np.ndarray:
    return (out["motion"] - np.asarray(loaded.mean)) / np.asarray(loaded.std)


def _rms(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> float:
    """Root mean square of a - b over the valid frames (valid: bool[N, T]; a, b: [N, T, ...])."""
    squared = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(*valid.shape, -1).mean(axis=-1)
    return float(np.sqrt(squared[valid].mean()))


def measure(loaded, request: dict, sampler: str, steps: int, spacing: str, repeats: int) -> tuple[dict, dict]:
    settings = dict(request, sampler=sampler, steps=steps, spacing=spacing)
    start = time.perf_counter()
    out = sampling.generate(loaded, **settings)
    first = time.perf_counter() - start
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        sampling.generate(loaded, **settings)
        seconds.append(time.perf_counter() - start)
    timing = {"median_s": statistics.median(seconds) if seconds else None, "first_call_s": first}
    return out, timing


def _load(parser: argparse.ArgumentParser, args: argparse.Namespace) -> sampling.LoadedModel:
    """The checkpoint the flags name; a usage error (exit 2) naming the flag, the checkpoint folder and
    the steps it holds where it cannot be read."""
    step = None if args.checkpoint_step < 0 else args.checkpoint_step
    try:
        return sampling.load_model(args.workdir, step, args.use_ema, step_option="--checkpoint-step")
    except checkpoint.CheckpointError as error:
        flag = "--workdir" if step is None else f"--checkpoint-step {step}"
        parser.error(f"{flag}: {error}")


def what_was_measured(args: argparse.Namespace, loaded: sampling.LoadedModel, request: dict) -> dict:
    """The record's account of the measurement, under the names --mode eval's metrics JSON and the
    config use: workdir (absolute), step (the checkpoint's), use_ema, diffusion_steps, diffusion_schedule
    and prediction (the run's diffusion.*), guidance_scale, seed, captions, num_samples, num_frames, and
    the software record."""
    diffusion = loaded.metadata["config"].get("diffusion", {})
    return {
        "workdir": os.path.abspath(args.workdir),
        "step": int(loaded.step),
        "use_ema": bool(args.use_ema),
        "diffusion_steps": int(loaded.schedule.num_steps),
        "diffusion_schedule": diffusion.get("schedule"),
        "prediction": str(loaded.prediction),
        "guidance_scale": float(request["guidance_scale"]),
        "seed": int(request["seed"]),
        "captions": list(request["captions"]),
        "num_samples": int(request["num_samples"]),
        "num_frames": int(request["num_frames"]),
        "software": provenance.software(jax.devices()[0]),
    }


def header_line(measured: dict, machine: dict) -> str:
    software = measured["software"]
    commit = (software["git_commit"] or "no git commit")[:12]
    if software["git_dirty"]:
        commit += " + uncommitted changes"
    steps = measured["diffusion_steps"]
    return (
        f"sampler accuracy: {measured['workdir']} step {measured['step']}, "
        f"{'EMA' if measured['use_ema'] else 'raw'} parameters, {steps} diffusion steps "
        f"({measured['diffusion_schedule']} schedule, {measured['prediction']} prediction); "
        f"{len(measured['captions'])} captions x {measured['num_samples']} samples x "
        f"{measured['num_frames']} frames, guidance {measured['guidance_scale']:g}, seed {measured['seed']}; "
        f"reference: dpmpp_2m over all {steps} steps; {machine['processor']}, jax {machine['jax']}, "
        f"{software['backend']}: {software['device_kind']}, {commit}"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, required=True, help="a trained run (launch.py's workdir)")
    parser.add_argument(
        "--checkpoint-step",
        type=int,
        default=-1,
        help="the checkpoint to measure (-1: the latest; launch.py's sample.checkpoint_step)",
    )
    parser.add_argument(
        "--use-ema",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the EMA parameters (--no-use-ema: the raw ones; launch.py's sample.use_ema)",
    )
    parser.add_argument("--steps", default="5,10,20,50", help="comma-separated step counts")
    parser.add_argument("--captions", default="wave|nod|clap|bow", help="'|'-separated")
    parser.add_argument("--num-samples", type=int, default=4, help="per caption")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--guidance", type=float, default=1.0, help="sample.guidance_scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the first (0: no timing)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    common.check_new_json(parser, args.json)
    try:
        step_counts = [int(s) for s in args.steps.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--steps must be comma-separated integers, got {args.steps!r}")
    if args.checkpoint_step < -1:
        parser.error(
            f"--checkpoint-step must be a checkpoint's step or -1 (the latest), got {args.checkpoint_step}"
        )

    loaded = _load(parser, args)
    num_steps = loaded.schedule.num_steps
    if not step_counts or min(step_counts) < 2 or max(step_counts) > num_steps:
        parser.error(f"--steps must lie in [2, {num_steps}] (the run's diffusion steps), got {args.steps!r}")
    request = dict(
        captions=args.captions.split("|"),
        num_frames=args.frames,
        num_samples=args.num_samples,
        guidance_scale=args.guidance,
        seed=args.seed,
    )
    machine = common.machine_info()
    measured = what_was_measured(args, loaded, request)
    print(header_line(measured, machine) + common.warning_lines(machine), flush=True)
    print(HEADER, flush=True)
    reference, ref_timing = measure(loaded, request, "dpmpp_2m", num_steps, "trailing", 0)
    valid = np.arange(reference["motion"].shape[1])[None] < reference["lengths"][:, None]
    ref_features = _standardized(reference, loaded)
    rows = []

    def add(sampler, spacing, steps, out, timing, label=None):
        row = {
            "sampler": label or sampler,
            "spacing": spacing,
            "steps": steps,
            "rms_features": _rms(_standardized(out, loaded), ref_features, valid),
            "rms_positions": None
            if out["positions"] is None
            else _rms(out["positions"], reference["positions"], valid),
            **timing,
        }
        rows.append(row)
        print(
            f"{row['sampler']:<10}{spacing:<10}{steps:>6}{row['rms_features']:>10.4f}"
            f"{common.fmt(row['rms_positions'], '.3f'):>10}{common.fmt(row['median_s'], '.2f'):>9}"
            f"{row['first_call_s']:>10.1f}",
            flush=True,
        )
        record = {**measured, "machine": machine, "args": vars(args), "rows": rows}
        common.write_json(args.json, record, quiet=True)

    out, timing = measure(loaded, request, "ddim", num_steps, "leading", 0)
    add("ddim", "all", num_steps, out, timing, label="ref gap")
    for steps in step_counts:
        for sampler, spacing in (
            ("ddim", "leading"),
            ("ddim", "trailing"),
            ("dpmpp_2m", "leading"),
            ("dpmpp_2m", "trailing"),
        ):
            out, timing = measure(loaded, request, sampler, steps, spacing, args.repeats)
            add(sampler, spacing, steps, out, timing)
    common.check_load_at_end(machine)
    common.write_json(args.json, {**measured, "machine": machine, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
