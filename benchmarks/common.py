"""What the train-step and sampling benchmarks share: sizes, batches, the analytic FLOP count, the matmul
floor, timing, the machine's description and the JSON record.

Import it before jax: it keeps jax from pre-allocating most of a GPU's memory (the PyTorch twin runs in
the same process) and puts the repository on sys.path.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from machine_load import check_load_at_end, load_check, warning_lines  # noqa: E402, F401 - every benchmark
from records import check_new_json, write_json  # noqa: E402, F401 - the benchmarks' --json files

from motion_ddpm_jax import host_malloc  # noqa: E402

# As launch.py does, before jax starts its threads; MOTION_DDPM_JAX_MALLOC=default measures without it.
# Both frameworks of a side-by-side run share the setting (one process).
host_malloc.tune()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from motion_ddpm_jax.config import base_config  # noqa: E402

# MotionDiffuse's sizes, which are also our config's defaults.
MODEL_SIZE_FLAGS = {
    "latent": ("latent_dim", 512),
    "layers": ("num_layers", 8),
    "ff": ("ff_size", 1024),
    "heads": ("num_heads", 8),
    "text_width": ("text_latent_dim", 256),
    "text_layers": ("text_num_layers", 4),
    "text_heads": ("text_num_heads", 4),
    "text_ff": ("text_ff_size", 2048),
}


def step_parser(description: str | None) -> argparse.ArgumentParser:
    """A benchmark's parser with the one-step sizes: --batch 32, --frames 196, --features 264."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=196)
    parser.add_argument("--features", type=int, default=264)
    return parser


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """--latent, --layers, ... (defaults: MotionDiffuse's sizes), --text-length and --vocab."""
    group = parser.add_argument_group("model size (defaults: MotionDiffuse)")
    for flag, (field, default) in MODEL_SIZE_FLAGS.items():
        group.add_argument(f"--{flag.replace('_', '-')}", type=int, default=default, help=f"model.{field}")
    group.add_argument("--text-length", type=int, default=77, help="caption tokens L (model.text_max_length)")
    group.add_argument(
        "--vocab",
        type=int,
        default=1000,
        help="token vocabulary (our train step takes tokens; MotionDiffuse took CLIP features, whose "
        "512 -> 256 projection the token table replaces; no matmul FLOPs either way)",
    )
    group.add_argument(
        "--kernels",
        choices=("xla", "pallas"),
        default="xla",
        help="model.kernels (pallas: on a CUDA GPU, the stylization and the linear attention's read and "
        "context as Pallas kernels; as xla elsewhere)",
    )


def bench_config(args: argparse.Namespace, frames: int, compute_dtype: str = "float32"):
    """The base config with the flags' model sizes and kernels, `frames` as max_motion_length, and
    `compute_dtype`."""
    config = base_config()
    config.data.max_motion_length = frames
    for flag, (field, _) in MODEL_SIZE_FLAGS.items():
        config.model[field] = getattr(args, flag)
    config.model.text_max_length = args.text_length
    config.model.compute_dtype = compute_dtype
    config.model.kernels = getattr(args, "kernels", "xla")
    return config


def random_batch(batch: int, frames: int, features: int, text_length: int, vocab: int, seed: int = 0):
    """A training batch as the pipeline delivers it (numpy): clip lengths from frames/5 to frames,
    caption lengths from 4 to L, standardized-looking motion that is zero on padded frames."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(frames // 5, 1), frames + 1, batch)
    lengths[0] = frames
    mask = np.arange(frames)[None] < lengths[:, None]
    text_lengths = rng.integers(min(4, text_length), text_length + 1, batch)
    return {
        "motion": (rng.standard_normal((batch, frames, features)) * mask[..., None]).astype(np.float32),
        "mask": mask,
        "tokens": rng.integers(3, vocab, (batch, text_length)).astype(np.int32),
        "text_mask": np.arange(text_length)[None] < text_lengths[:, None],
    }


def empty_caption(text_length: int) -> tuple[np.ndarray, np.ndarray]:
    """The caption-dropout replacement: tokens [BOS, EOS, pad...] and its mask."""
    tokens = np.zeros(text_length, np.int32)
    tokens[:2] = (1, 2)
    return tokens, np.arange(text_length) < 2


def model_flops(
    batch: int,
    frames: int,
    features: int,
    text_length: int,
    model_config,
    *,
    text_feature_dim: int | None = None,
    encode_text: bool = True,
    hoisted: bool = False,
) -> dict[str, int]:
    """Matmul FLOPs (2 per multiply-add) of one forward pass of our MotionTransformer, and of a training
    step (forward + backward). Elementwise work (softmax, norms, activations, losses, optimizer) is left
    out: it is a few percent of the arithmetic (compare with XLA's `cost_analysis`).

    Per motion token and layer: Q/K/V 3C^2, cross-attention Q C^2, FFN 2 C F, three stylization outputs
    3 C^2, linear attention 2 C h (self) + C h (cross output), h = C / heads; per text token and layer the
    cross-attention K/V 2 W C and context C h; per example and layer the three stylization scale/shift
    projections 3 E 2C (E = 4C). The backward pass costs twice the forward, less the input gradients of
    the first layers (the motion input, the sinusoid and the text features need none).
    `model_config`: the `model` section (latent_dim, ff_size, ...); `encode_text=False` leaves out
    the text encoder (samplers encode the captions once). `hoisted=True` (with `encode_text=False`): a
    sampler step of ours, which computes the caption's cross-attention keys, values and context and its
    projection into the conditioning once per call (`sampling.conditioned_denoiser`): "forward" leaves
    them out and "once" counts them.
    """
    m = model_config
    c, e, w, ff = m.latent_dim, 4 * m.latent_dim, m.text_latent_dim, m.ff_size
    head = c // m.num_heads
    motion_tokens, text_tokens = batch * frames, batch * text_length
    per_example = c * e + e * e + w * e + m.num_layers * 3 * e * 2 * c
    per_motion_token = 2 * features * c + m.num_layers * (7 * c * c + 2 * c * ff + 3 * c * head)
    per_text_token = m.num_layers * (2 * w * c + c * head)
    text = 0
    if encode_text:
        attention = 2 * text_length * w  # scores and weighted values, all heads
        text = m.text_num_layers * (4 * w * w + 2 * w * m.text_ff_size + attention)
        text += text_feature_dim * w if text_feature_dim else 0
    if hoisted and encode_text:
        raise ValueError("hoisted counts a sampler step, whose captions are encoded once: encode_text=False")
    once = batch * w * e + text_tokens * per_text_token if hoisted else 0
    macs = batch * per_example + motion_tokens * per_motion_token + text_tokens * (per_text_token + text)
    macs -= once
    no_input_grad = motion_tokens * features * c + batch * c * e
    if encode_text and text_feature_dim:
        no_input_grad += text_tokens * text_feature_dim * w
    counts = {"forward": 2 * macs, "train_step": 2 * (3 * macs - no_input_grad)}
    return counts | {"once": 2 * once} if hoisted else counts


def xla_flops(compiled) -> float | None:
    """XLA's own FLOP count of a compiled computation, where the backend reports one."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops > 0 else None


def torch_device(name: str, threads: int = 0):
    """torch's device ('auto': cuda when available); threads > 0 sets torch's intra-op threads (on a
    busy shared CPU, OpenMP's spinning barriers make 2 threads up to 13x slower than 1: measure both)."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def torch_sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_floor(size: int, repeats: int, impls: set[str], device=None, budget_s: float = 1.0) -> dict:
    """FLOP/s of one n x n x n matmul per framework and dtype (median of `repeats` after a warm-up): the
    machine's floor that a step's FLOP/s are compared with. n starts at `size` and is halved while one
    product takes longer than `budget_s` (bf16 without hardware support can be 100x slower than fp32).
    Keys: jax_float32, jax_bfloat16 (jax's product accumulates into a float32 result, the form our bf16
    Dense layers use: XLA:CPU runs bf16 at its AMX / AVX512-BF16 rate only so, a bf16 result goes through
    float32), and with 'torch' in `impls` torch_float32, torch_bfloat16 (torch's F.linear, x @ W^T, the
    op its Linear layers run); each with a companion `<key>_n`."""
    out = {}
    rng = np.random.default_rng(0)
    host = rng.standard_normal((2, size, size)).astype(np.float32)

    def measure(key, make_call):
        n = size
        while True:
            call = make_call(n)
            start = time.perf_counter()
            call()
            if time.perf_counter() - start <= budget_s or n <= 256:
                break
            n //= 2
        out[key] = 2.0 * n**3 / statistics.median(time_repeats(call, repeats))
        out[f"{key}_n"] = n

    for dtype in ("float32", "bfloat16"):

        def jax_call(n, dtype=dtype):
            a, b = (jnp.asarray(x[:n, :n], dtype) for x in host)
            product = functools.partial(jnp.matmul, preferred_element_type=jnp.float32)
            matmul = jax.jit(product).lower(a, b).compile()
            return lambda: matmul(a, b).block_until_ready()

        measure(f"jax_{dtype}", jax_call)
    if "torch" in impls:
        import torch

        for dtype in (torch.float32, torch.bfloat16):

            def torch_call(n, dtype=dtype):
                a, b = (torch.from_numpy(x[:n, :n].copy()).to(device=device, dtype=dtype) for x in host)

                def call():
                    with torch.no_grad():
                        torch.nn.functional.linear(a, b)
                    torch_sync(device)

                return call

            measure(f"torch_{str(dtype).removeprefix('torch.')}", torch_call)
    return out


def time_repeats(fn: Callable[[], object], repeats: int, warmup: int = 0) -> list[float]:
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def rss_high_water_mb() -> float:
    """This process's peak resident memory since it started or since `reset_rss_high_water`, in MB:
    VmHWM of /proc/self/status (ru_maxrss where there is no /proc; it includes a parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def reset_rss_high_water() -> bool:
    """Reset VmHWM to the current resident size (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def minor_page_faults() -> int:
    """This process's minor page faults so far (getrusage): memory touched for the first time, or given
    back to the system and mapped again."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


_warned_busy = False  # machine_info prints its warning to stderr once per process


def machine_info(torch_device_=None) -> dict:
    """What ran the benchmark: CPU, accelerator, library versions, load, date. `busy` and `warnings`:
    whether the load beside this benchmark exceeded the usable cores (`load_check`; the warning goes to
    stderr too, once)."""
    global _warned_busy
    load = load_check()
    info = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host_cpus": os.cpu_count(),
        "usable_cpus": load["usable_cpus"],
        "processor": _cpu_name(),
        "load_average_1m": load["load_average_1m"],
        "load_beside_own_1m": load["load_beside_own_1m"],
        "busy": load["warning"] is not None,
        "warnings": [load["warning"]] if load["warning"] else [],
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_device": str(jax.devices()[0].device_kind),
        "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "host_malloc": host_malloc.describe(),
    }
    if torch_device_ is not None:
        import torch

        info["torch"] = torch.__version__
        info["torch_device"] = str(torch_device_)
        info["torch_threads"] = torch.get_num_threads()
        if torch_device_.type == "cuda":
            info["torch_device_name"] = torch.cuda.get_device_name(torch_device_)
            info["torch_allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
    if load["warning"] and not _warned_busy:
        print(load["warning"], file=sys.stderr, flush=True)
        _warned_busy = True
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def human(value: float | None, unit: str = "") -> str:
    """1.23e12 -> '1.23 T' (k, M, G, T)."""
    if value is None:
        return "-"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def counted(count: int, noun: str) -> str:
    """'1 layer', '2 layers': a header's count with its noun in the number it takes (nouns with a plain
    -s plural: "warm-up step", "untimed call")."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def fmt(value, pattern: str) -> str:
    """`value` formatted with `pattern`, or "-" for None (a table cell with nothing measured)."""
    return "-" if value is None else format(value, pattern)
