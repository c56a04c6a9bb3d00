"""Time the BVH reader on a synthetic one-minute, 120 fps, BEAT-sized file.

The file uses the BEAT skeleton (75 BVH joints + 13 `*_Nub` end sites, Hips with 6 channels, the others 3
rotation channels: 228 values per frame) with random smooth motion printed like BEAT's files (%.6f).

    .venv/bin/python benchmarks/bench_bvh.py [--seconds 60] [--repeats 7] [--json out.json]

Reports the first call (for positions it includes jit compilation of forward kinematics, once per skeleton
and process) and the median of the repeats that follow, for: `np.loadtxt` of the frame block alone (the
float-parsing floor the reader builds on), reading + parsing (`load_bvh`, which also builds the local
rotation matrices), global positions (`BvhMotion.positions()`), and both together.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import machine_load  # noqa: E402 - first: this benchmark's own CPU use counts from here
import records  # noqa: E402

from motion_ddpm_jax.data.bvh import load_bvh  # noqa: E402

SKELETON_FILES = (
    REPO / "motion_ddpm_jax" / "assets" / "beat_skeleton.json",
    Path("/work/shared/beat_skeleton.json"),
)
ROOT_CHANNELS = "Xposition Yposition Zposition Zrotation Xrotation Yrotation"
JOINT_CHANNELS = "Zrotation Xrotation Yrotation"


def _skeleton_json() -> dict:
    for path in SKELETON_FILES:
        if path.exists():
            return json.loads(path.read_text())
    raise FileNotFoundError(f"no beat_skeleton.json in {[str(p) for p in SKELETON_FILES]}")


def synthetic_bvh_text(seconds: float = 60.0, fps: int = 120, seed: int = 0) -> str:
    """A BEAT-shaped BVH file as text: hierarchy from beat_skeleton.json, `seconds * fps` frames."""
    skeleton = _skeleton_json()
    names, parents, offsets = skeleton["names"], skeleton["parents"], skeleton["offsets"]
    children: dict[int, list[int]] = {j: [] for j in range(len(names))}
    for joint, parent in enumerate(parents):
        if parent >= 0:
            children[parent].append(joint)

    lines = ["HIERARCHY"]

    def write(joint: int, depth: int) -> None:
        pad = "\t" * depth
        offset = " ".join(f"{v:.6f}" for v in offsets[joint])
        if names[joint].endswith("_Nub") and not children[joint]:
            lines.extend([f"{pad}End Site", f"{pad}{{", f"{pad}\tOFFSET {offset}", f"{pad}}}"])
            return
        keyword = "ROOT" if parents[joint] < 0 else "JOINT"
        channels = f"CHANNELS 6 {ROOT_CHANNELS}" if parents[joint] < 0 else f"CHANNELS 3 {JOINT_CHANNELS}"
        lines.extend(
            [f"{pad}{keyword} {names[joint]}", f"{pad}{{", f"{pad}\tOFFSET {offset}", f"{pad}\t{channels}"]
        )
        for child in children[joint]:
            write(child, depth + 1)
        lines.append(f"{pad}}}")

    write(parents.index(-1), 0)
    num_rotating = sum(1 for j, n in enumerate(names) if not (n.endswith("_Nub") and not children[j]))
    num_frames = int(round(seconds * fps))
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames)[:, None] / fps
    phase, speed = rng.uniform(0, 2 * np.pi, (2, 3 + 3 * num_rotating))
    amplitude = np.concatenate([[5.0, 2.0, 5.0], np.full(3 * num_rotating, 30.0)])
    values = amplitude * np.sin(2 * np.pi * (0.2 + speed) * t + phase)
    values[:, 1] += 90.0  # hips height, cm
    lines += ["MOTION", f"Frames: {num_frames}", f"Frame Time: {1 / fps:.6f}"]
    body = "\n".join(" ".join(row) for row in np.char.mod("%.6f", values).tolist())
    return "\n".join(lines) + "\n" + body + "\n"


def _time(fn, repeats: int) -> tuple[float, float]:
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the synthetic file")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats after the first call")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers to this JSON file")
    args = parser.parse_args()
    records.check_new_json(parser, args.json)

    machine = machine_load.record_at_start()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "synthetic_beat.bvh"
        path.write_text(synthetic_bvh_text(args.seconds))
        size_mb = path.stat().st_size / 1e6
        motion = load_bvh(path)
        text = path.read_text()
        frames = text[text.index("\n", text.index("Frame Time")) + 1 :]
        rows = {
            "np.loadtxt of frames": _time(
                lambda: np.loadtxt(io.StringIO(frames), comments=None), args.repeats
            ),
            "parse (load_bvh)": _time(lambda: load_bvh(path), args.repeats),
            "positions()": _time(motion.positions, args.repeats),
            "parse + positions": _time(lambda: load_bvh(path).positions(), args.repeats),
        }
    num_frames, num_joints = motion.local_rotations.shape[:2]
    print(
        f"BVH reader: {num_frames} frames x {num_joints} joints ({len(motion.euler_orders)} rotating, "
        f"{motion.euler_degrees.shape[1] * 3 + 3} values/frame), {size_mb:.1f} MB; "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
        + machine_load.warning_lines(machine)
    )
    print(f"{'step':<24}{'first call (s)':>16}{'median (s)':>14}")
    for name, (first, median) in rows.items():
        print(f"{name:<24}{first:>16.3f}{median:>14.3f}")
    machine_load.check_load_at_end(machine)
    if args.json:
        record = {
            "frames": int(num_frames),
            "joints": int(num_joints),
            "file_mb": size_mb,
            "repeats": args.repeats,
            "cpus": os.cpu_count(),
            "seconds": {name: {"first": first, "median": median} for name, (first, median) in rows.items()},
            "machine": machine,
        }
        records.write_json(args.json, record)


if __name__ == "__main__":
    main()
