"""Our train step compiled for a GPU on a machine that has none, and the bytes its ops move, read from
the compiled program: what a respelling does to the memory-bound part of a GPU step, without the card.

    .venv/bin/python benchmarks/gpu_program.py [--gpu h200|h100] [--variants current,NAME,...]
        [--batch 256] [--frames 196] [--features 264] [--layers 8 ...] [--keep-hlo DIR] [--json out.json]

Needs the CUDA plugin of the installed jax, at jax's own version, and CUDA's `ptxas` on the PATH (no
GPU, no driver, no cuDNN):

    .venv/bin/pip install "jax-cuda13-plugin==$(.venv/bin/python -c 'import jax; print(jax.__version__)')" \\
        "jax-cuda13-pjrt==$(.venv/bin/python -c 'import jax; print(jax.__version__)')"

(about 130 MB; the cuda12 pair works the same). XLA then compiles for the card that `--gpu` describes
(its compute capability, SM count, memory bandwidth and cache sizes: a deviceless compilation, which
cannot autotune: a few emitter choices differ from a compilation on the card). The step is the one
`bench_train_step.py` times and `profile_step.py` profiles (jitted with the state donated, no
bone-length term, bfloat16 compute by default), traced as on a GPU (the model's CPU-only spellings
off), each variant with `bench_variants.py`'s swaps and XLA options (`xla:NAME=VALUE`).

For each variant: compile seconds (on this CPU), the device memory the program holds at once (XLA's
buffer assignment: arguments, outputs and temporaries), the products' GFLOP per step, and the bytes
per step (`profile_step.program_bytes`: each op's operands and result, the program run once) of all its ops
beside the products (and that total's ratio to the first variant's), of its reductions,
transposes/copies and elementwise ops (the memory-bound ops that bounded session 19's H200 step, where
they moved 83.9 GB in 34.8 ms), of hand-written (Pallas) kernels, and the part of the memory-bound
ones that XLA emits as Triton block-level fusions (the slow fusions of that profile). Checked against
the card: the H200's compiled program, kept in benchmarks/results/h200-2026-12-04/, counts 83.9 GB of
memory-bound ops; this script's compilation of the same step 80.2 GB (RESULTS.md).

`--keep-hlo DIR` writes each variant's program there (`<variant>.hlo.txt`; the directory must be new or
empty), for `profile_step.program_bytes` or a reader.
"""

from __future__ import annotations

import os

# Before jax loads its plugins: no device is looked for, and the plugin's check of the CUDA libraries
# (cuDNN, cuBLAS, ...) that only running a program needs is skipped.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")

import contextlib  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest import mock  # noqa: E402

import bench_train_step  # noqa: E402, I001 - first: it imports common, which sets the allocator before jax
import bench_variants  # noqa: E402
import common  # noqa: E402
import jax  # noqa: E402
import profile_step  # noqa: E402

# What XLA:GPU needs to know of a card to compile for it (stream_executor's GpuDeviceInfoProto fields),
# from the cards' data sheets: H100 SXM5 80 GB and H200 141 GB (the same Hopper die, sm_90, 132 SMs,
# 50 MiB of L2; the H200's HBM3e at 4.8 TB/s). Registers and shared memory: sm_90's limits.
GPUS = {
    "h100": {"name": "NVIDIA H100 80GB HBM3", "memory_bandwidth": 3_352_320_000_000,
             "device_memory_size": 84_929_347_584, "clock_rate_ghz": 1.98},
    "h200": {"name": "NVIDIA H200", "memory_bandwidth": 4_800_000_000_000,
             "device_memory_size": 150_754_820_096, "clock_rate_ghz": 1.98},
}  # fmt: skip


def target_config(gpu: str) -> str:
    """The text proto (stream_executor.GpuTargetConfigProto) that describes card `gpu` (a key of GPUS)."""
    card = GPUS[gpu]
    return f"""gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {card["memory_bandwidth"]}
  l2_cache_size: 52428800
  clock_rate_ghz: {card["clock_rate_ghz"]}
  device_memory_size: {card["device_memory_size"]}
  shared_memory_per_block_optin: 232448
  cuda_compute_capability {{ major: 9 minor: 0 }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 10 }}
runtime_version {{ major: 13 minor: 0 }}
device_description_str: "{card["name"]}"
"""


def gpu_sharding(gpu: str) -> jax.sharding.NamedSharding:
    """A one-device sharding on card `gpu`, described, not present: arguments placed there make jax
    compile for it. Raises RuntimeError, saying what to install, where jax has no CUDA plugin."""
    from jax.experimental import topologies

    try:
        topology = topologies.get_topology_desc(
            platform="cuda", target_config=target_config(gpu), topology="1x1x1"
        )
    except Exception as error:  # jax raises NotImplementedError, or the plugin's own error
        raise RuntimeError(
            f"jax {jax.__version__} cannot compile for a GPU here ({type(error).__name__}: {error}); install "
            f"its CUDA plugin at the same version: pip install jax-cuda13-plugin=={jax.__version__} "
            f"jax-cuda13-pjrt=={jax.__version__} (and CUDA's ptxas on the PATH)"
        ) from error
    mesh = topologies.make_mesh(topology, (1,), ("device",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


@contextlib.contextmanager
def traced_as_gpu():
    """jax.default_backend() answers "gpu" while the step is traced: the model picks its spellings by it
    (model._cpu_low_precision, model._apart_from_products are for XLA:CPU), and this machine's default
    backend is its CPU."""
    with mock.patch.object(jax, "default_backend", lambda: "gpu"):
        yield


def abstract_on(tree, sharding):
    """Each array of `tree` as a jax.ShapeDtypeStruct placed by `sharding` (nothing is transferred)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def compile_for_gpu(step: bench_train_step.OurStep, variant: str, dtype: str, sharding):
    """(compiled program of `variant`'s train step for the card of `sharding`, compile seconds); the
    step's state, batch and rng already placed there (`abstract_on`)."""
    # The abstract mesh names the card to Pallas's Triton lowering, which otherwise asks the local device.
    with traced_as_gpu(), jax.sharding.use_abstract_mesh(sharding.mesh.abstract_mesh):
        return bench_variants.compile_variant(step, variant, dtype)


def _device_memory_gb(compiled) -> float | None:
    """What the program holds on the card at once by XLA's buffer assignment: its arguments (the train
    state, donated, and the batch), outputs not aliased to them, and its temporaries, in GB (None where
    this jax does not say)."""
    try:
        stats = compiled.memory_analysis()
        held = stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
        return (held + stats.temp_size_in_bytes) / 1e9
    except Exception:  # memory_analysis is not in every jax, nor filled by every backend
        return None


def file_name(variant: str) -> str:
    """A file name for a variant's program: its name with every character outside [A-Za-z0-9._-] as '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", variant) + ".hlo.txt"


def parse_args(argv=None):
    parser = common.step_parser(__doc__)
    parser.set_defaults(batch=256)
    parser.add_argument("--gpu", choices=sorted(GPUS), default="h200")
    parser.add_argument("--variants", default="current", help="bench_variants.py's names, comma-separated")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16")
    parser.add_argument("--keep-hlo", type=Path, default=None, help="write each variant's program here")
    parser.add_argument("--json", type=Path, default=None)
    common.add_model_flags(parser)
    args = parser.parse_args(argv)
    common.check_new_json(parser, args.json)
    args.variants = args.variants.split(",")
    if len(set(args.variants)) != len(args.variants):
        parser.error(f"--variants must not repeat a name, got {','.join(args.variants)}")
    for name in args.variants:
        try:
            bench_variants.check_variant(name)
        except ValueError as error:
            parser.error(f"--variants: {error}")
    if args.keep_hlo is not None and args.keep_hlo.exists() and any(args.keep_hlo.iterdir()):
        parser.error(f"--keep-hlo {args.keep_hlo} is not empty: give a new or empty directory")
    return args


def print_table(gpu: str, rows: list[dict]) -> None:
    print(f"\ncompiled for {GPUS[gpu]['name']} (deviceless); GB per step: operands and results, each op once")
    print(
        "| variant | compile s | device memory GB | GFLOP | GB beside products | vs first | memory-bound "
        "GB | reductions | transposes/copies | elementwise | Pallas kernels | Triton block-level GB (ops) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    first = rows[0].get("beside_products_gbytes") if rows else None
    for row in rows:
        if "failed" in row:
            print(f"| {row['variant']} | did not compile: {row['failed'][:100]} ||||||||||")
            continue
        kinds = row["kinds"]
        gbytes = {
            kind: kinds.get(kind, {}).get("gbytes", 0.0) for kind in (*profile_step.MEMORY_BOUND, "kernel")
        }
        per_kind = " | ".join(f"{gbytes[kind]:.2f}" for kind in profile_step.MEMORY_BOUND)
        beside = row["beside_products_gbytes"]
        memory = f"{row['device_memory_gb']:.1f}" if row.get("device_memory_gb") is not None else "?"
        print(
            f"| {row['variant']} | {row['compile_s']:.0f} | {memory} | {row['program_gflop']:.1f} | "
            f"{beside:.2f} | {beside / first:.3f} | {row['memory_bound_gbytes']:.2f} | {per_kind} | "
            f"{gbytes['kernel']:.2f} | {row['triton']['gbytes']:.2f} ({row['triton']['ops']}) |"
        )


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        sharding = gpu_sharding(args.gpu)
    except RuntimeError as error:
        sys.exit(f"gpu_program.py: {error}")
    flags = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    record = {"benchmark": "gpu_program", "gpu": args.gpu, "jax": jax.__version__, "complete": False,
              "args": flags, "variants": []}  # fmt: skip
    step = bench_train_step.OurStep(args, args.features)
    step.state, step.batch, step.rng = (abstract_on(t, sharding) for t in (step.state, step.batch, step.rng))
    for index, variant in enumerate(args.variants):
        try:
            compiled, seconds = compile_for_gpu(step, variant, args.dtype, sharding)
        except Exception as error:  # an XLA option this XLA does not know, say: that variant alone fails
            if index == 0:
                raise
            record["variants"].append({"variant": variant, "failed": f"{type(error).__name__}: {error}"})
            print(f"{variant}: did not compile ({type(error).__name__}: {error})", file=sys.stderr)
            continue
        text = compiled.as_text()
        counted = profile_step.program_bytes(text)
        row = {
            "variant": variant,
            "compile_s": seconds,
            "program_gflop": counted["gflop"],
            "device_memory_gb": _device_memory_gb(compiled),
            "kinds": counted["kinds"],
            "memory_bound_gbytes": counted["memory_bound_gbytes"],
            "beside_products_gbytes": sum(v["gbytes"] for k, v in counted["kinds"].items() if k != "matmul"),
            "triton": counted["triton"],
            "top_ops": counted["ops"][:40],
        }
        record["variants"].append(row)
        print(f"{variant}: compiled in {seconds:.0f} s, {row['memory_bound_gbytes']:.2f} GB", file=sys.stderr)
        if args.keep_hlo is not None:
            args.keep_hlo.mkdir(parents=True, exist_ok=True)
            (args.keep_hlo / file_name(variant)).write_text(text)
        common.write_json(args.json, record, quiet=True)
    record["complete"] = True
    print_table(args.gpu, record["variants"])
    analytic = common.model_flops(args.batch, args.frames, args.features, args.text_length, step.config.model)
    print(f"(analytic count, common.model_flops: {analytic['train_step'] / 1e9:.1f} GFLOP per step)")
    common.write_json(args.json, record)


if __name__ == "__main__":
    main()
