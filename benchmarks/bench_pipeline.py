"""Throughput of the input pipeline on a synthetic BEAT-sized split.

    .venv/bin/python benchmarks/bench_pipeline.py [--clips 2000] [--batch 32] [--frames 196] [--json out.json]

The split holds `--clips` clips of 60-400 frames with 264 features and 1-3 captions each. Reports the
construction of the BatchSource (tokenizer build, standardization and tokenization of everything) and
batches per second for `batch(step)` on one process, on one of 4 processes (a quarter of the batch), and
through the background prefetcher; each rate is the median of `--repeats` runs of `--batches` batches
after a warm-up run. Host memory is managed as in training (`host_malloc.tune()`, which launch.py applies;
MOTION_DDPM_JAX_MALLOC=default measures glibc's defaults): a batch of 53 MB (B=256) is then no fresh
`mmap` whose pages fault in at every call.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import machine_load  # noqa: E402 - first: this benchmark's own CPU use counts from here
import records  # noqa: E402

from motion_ddpm_jax import host_malloc  # noqa: E402
from motion_ddpm_jax.config import base_config  # noqa: E402

host_malloc.tune()  # before the big allocations, as launch.py does

from motion_ddpm_jax.data import pipeline  # noqa: E402
from motion_ddpm_jax.data.motion_text import Split  # noqa: E402
from motion_ddpm_jax.text import Tokenizer  # noqa: E402

WORDS = (
    "a the person man woman waves claps points raises lowers left right hand arm slowly quickly while".split()
)


def synthetic_split(num_clips: int, num_features: int, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(60, 401, num_clips)
    motions = tuple(rng.standard_normal((n, num_features), dtype=np.float32) * 10 + 3 for n in lengths)
    captions = tuple(
        tuple(" ".join(rng.choice(WORDS, rng.integers(4, 16))) + "." for _ in range(rng.integers(1, 4)))
        for _ in range(num_clips)
    )
    return Split("train", tuple(f"clip{i:05d}" for i in range(num_clips)), motions, captions)


def _rate(next_batch, batches: int, repeats: int) -> float:
    for _ in range(batches):  # warm-up
        next_batch()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches):
            next_batch()
        rates.append(batches / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--features", type=int, default=264)
    parser.add_argument("--batch", type=int, default=32, help="global batch size")
    parser.add_argument("--frames", type=int, default=196, help="max_motion_length")
    parser.add_argument("--text-length", type=int, default=32, help="max_text_length")
    parser.add_argument(
        "--spell-prob",
        type=float,
        default=base_config().data.spell_prob,
        help="data.spell_prob (words in bytes)",
    )
    parser.add_argument("--batches", type=int, default=200, help="batches per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after the warm-up")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers to this JSON file")
    args = parser.parse_args()
    records.check_new_json(parser, args.json)

    split = synthetic_split(args.clips, args.features)
    frames = np.concatenate(split.motions)
    mean, std = frames.mean(0), frames.std(0)
    del frames

    def make(process_index: int = 0, process_count: int = 1) -> pipeline.BatchSource:
        tokenizer = Tokenizer.build(c for group in split.captions for c in group)
        return pipeline.BatchSource(
            split, mean, std, tokenizer, args.batch, args.frames, args.text_length, seed=0,
            process_index=process_index, process_count=process_count, spell_prob=args.spell_prob,
        )  # fmt: skip

    machine = machine_load.record_at_start()
    start = time.perf_counter()
    source = make()
    construction_s = time.perf_counter() - start
    step = iter(range(10**9))
    rows = {"batch(step), 1 process": _rate(lambda: source.batch(next(step)), args.batches, args.repeats)}
    quarter = make(process_index=1, process_count=4)
    rows["batch(step), process 1 of 4"] = _rate(lambda: quarter.batch(next(step)), args.batches, args.repeats)
    with pipeline.prefetch(source, start_step=0, depth=2) as prefetched:
        rows["prefetch(depth=2), 1 process"] = _rate(lambda: next(prefetched), args.batches, args.repeats)

    batch_mb = sum(value.nbytes for value in source.batch(0).values()) / 1e6
    num_frames = sum(map(len, split.motions))
    print(
        f"input pipeline: {args.clips} clips ({num_frames} frames x {args.features} features), "
        f"batch {args.batch} x {args.frames} frames, text {args.text_length} (words spelled at "
        f"{args.spell_prob:g}), {batch_mb:.1f} MB per batch; "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, numpy {np.__version__}; "
        f"host memory: {host_malloc.describe()}" + machine_load.warning_lines(machine)
    )
    print(f"construction: {construction_s:.2f} s")
    print(f"{'':<32}{'batches/s':>12}{'ms/batch':>10}")
    for name, rate in rows.items():
        print(f"{name:<32}{rate:>12.0f}{1e3 / rate:>10.2f}")
    machine_load.check_load_at_end(machine)
    if args.json:
        record = {
            "clips": args.clips,
            "features": args.features,
            "global_batch": args.batch,
            "max_motion_length": args.frames,
            "max_text_length": args.text_length,
            "spell_prob": args.spell_prob,
            "cpus": os.cpu_count(),
            "numpy": np.__version__,
            "host_malloc": host_malloc.describe(),
            "construction_s": construction_s,
            "batches_per_s": rows,
            "machine": machine,
        }
        records.write_json(args.json, record)


if __name__ == "__main__":
    main()
