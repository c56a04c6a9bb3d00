"""The Fréchet Gesture Distance (as BEAT's): a small convolutional motion autoencoder, its training
(`launch.py --mode train_autoencoder`, `train_autoencoder`), its folder (save, load, the settings and
dataset fingerprint that must match), and `fgd`, the Fréchet distance of its latents.

Apart from `metrics` because it is the one part of the evaluation that needs flax and optax (a model
trained here), and apart from `evaluate` because `--mode train_autoencoder` needs none of an eval run.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shlex
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from motion_ddpm_jax import files
from motion_ddpm_jax.errors import EvaluationError
from motion_ddpm_jax.metrics import frechet_distance_of

AUTOENCODER_FORMAT = "motion-ddpm-jax/fgd-autoencoder/1"
AUTOENCODER_WINDOW_S = 1.0  # window length in seconds (rounded down to a multiple of 4 frames)
AUTOENCODER_HIDDEN = 64
AUTOENCODER_BATCH = 32
AUTOENCODER_LR = 1e-3


# ------------------------------------------------------------------------------------------ FGD autoencoder
def _leaky(x):
    return nn.leaky_relu(x, 0.2)


class TemporalConv(nn.Module):
    """1-D convolution over time [B, W, C] -> [B, ceil(W / stride), features], 'same' zero padding, written
    as one matmul over stacked shifted frames (XLA:CPU runs that about twice as fast as its convolution)."""

    features: int
    kernel: int = 3
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        length = x.shape[1]
        x = jnp.pad(x, ((0, 0), ((self.kernel - 1) // 2, self.kernel // 2), (0, 0)))
        patches = [x[:, i : i + length : self.stride] for i in range(self.kernel)]
        return nn.Dense(self.features)(jnp.concatenate(patches, axis=-1))


class Upsample(nn.Module):
    """Twice the frames: [B, W, C] -> [B, 2W, features] (a kernel-3 convolution to 2 * features, each
    output frame split into two)."""

    features: int

    @nn.compact
    def __call__(self, x):
        batch, length, _ = x.shape
        return TemporalConv(2 * self.features)(x).reshape(batch, 2 * length, self.features)


class ConvEncoder(nn.Module):
    """Windows [B, W, F] (standardized) -> latents [B, W / 4, latent]."""

    hidden: int
    latent: int

    @nn.compact
    def __call__(self, x):
        x = _leaky(nn.Dense(self.hidden)(x))
        x = _leaky(TemporalConv(self.hidden)(x))
        x = _leaky(TemporalConv(self.hidden, 4, 2)(x))
        x = _leaky(TemporalConv(2 * self.hidden, 4, 2)(x))
        return TemporalConv(self.latent)(x)


class ConvDecoder(nn.Module):
    """Latents [B, W / 4, latent] -> windows [B, W, F]."""

    hidden: int
    features: int

    @nn.compact
    def __call__(self, z):
        x = _leaky(TemporalConv(2 * self.hidden)(z))
        x = _leaky(Upsample(self.hidden)(x))
        x = _leaky(Upsample(self.hidden)(x))
        x = _leaky(TemporalConv(self.hidden)(x))
        return nn.Dense(self.features)(x)


class MotionAutoencoder(nn.Module):
    """The FGD motion autoencoder (as BEAT's): per-frame projections and 1-D temporal convolutions, time
    downsampled by 4 in the latent. Windows [B, W, F], W a multiple of 4."""

    features: int
    hidden: int = AUTOENCODER_HIDDEN
    latent: int = 32

    def setup(self):
        self.encoder = ConvEncoder(self.hidden, self.latent)
        self.decoder = ConvDecoder(self.hidden, self.features)

    def __call__(self, x):
        return self.decoder(self.encoder(x))

    def encode(self, x):
        return self.encoder(x)


def window_frames(fps: float) -> int:
    """Autoencoder window: AUTOENCODER_WINDOW_S at `fps`, rounded down to a multiple of 4 (at least 4)."""
    return max(4, 4 * int(fps * AUTOENCODER_WINDOW_S // 4))


def motion_windows(motions: Sequence[np.ndarray], window: int, stride: int | None = None) -> np.ndarray:
    """Windows [M, window, D] cut from clips [T_i, D] every `stride` frames (default window // 2); clips
    shorter than `window` give none."""
    stride = stride or max(window // 2, 1)
    windows = [
        motion[start : start + window]
        for motion in motions
        for start in range(0, len(motion) - window + 1, stride)
    ]
    if not windows:
        depth = motions[0].shape[-1] if len(motions) else 0
        return np.zeros((0, window, depth), np.float32)
    return np.stack(windows).astype(np.float32)


@functools.partial(jax.jit, static_argnames="model")
def _latent_means(params, windows, model: MotionAutoencoder):
    return model.apply({"params": params}, windows, method=MotionAutoencoder.encode).mean(axis=1)


class FgdEncoder:
    """A trained FGD autoencoder: `encode` maps physical feature windows [N, W, D] to latent means [N, L]."""

    def __init__(
        self,
        params,
        mean: np.ndarray,
        std: np.ndarray,
        settings: dict[str, Any],
        *,
        trained: dict[str, Any] | None = None,
        weights_sha256: str | None = None,
    ):
        self.params = params
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.settings = dict(settings)
        self.trained = dict(trained or {})  # autoencoder.json's training summary (final_loss, ...)
        self.weights_sha256 = weights_sha256  # of the autoencoder.npz read, where it was read from a folder
        self.model = MotionAutoencoder(
            int(settings["feature_size"]), int(settings["hidden"]), int(settings["latent"])
        )

    @property
    def window(self) -> int:
        return int(self.settings["window"])

    def encode(self, windows, chunk: int = 256) -> np.ndarray:
        """Latent means (over time) [N, latent], float64, of windows [N, W, D] of physical features."""
        windows = np.asarray(windows, np.float32)
        if windows.ndim != 3 or windows.shape[1:] != (self.window, self.mean.size):
            raise ValueError(
                f"windows must be [N, {self.window}, {self.mean.size}] for this autoencoder, "
                f"got {windows.shape}"
            )
        out = np.zeros((len(windows), self.model.latent))
        for i in range(0, len(windows), chunk):  # chunks of one shape: one compilation
            part = (windows[i : i + chunk] - self.mean) / self.std
            part = np.pad(part, ((0, chunk - len(part)), (0, 0), (0, 0)))
            out[i : i + chunk] = np.asarray(_latent_means(self.params, part, self.model))[: len(windows) - i]
        return out


def fgd(encoder: FgdEncoder, real_windows, generated_windows) -> float:
    """Fréchet Gesture Distance: the Fréchet distance between the autoencoder's latent means of real and
    generated windows [N, W, D] (physical features)."""
    return frechet_distance_of(encoder.encode(real_windows), encoder.encode(generated_windows))


def init_autoencoder(model: MotionAutoencoder, window: int, seed: int) -> dict[str, Any]:
    """Parameters of `model` drawn with numpy (LeCun-normal kernels, zero biases): compiling flax's
    initialisers would cost more than the whole default training on a CPU."""
    example = jnp.zeros((1, window, model.features))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), example))["params"]
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if path[-1].key == "kernel":
            return (rng.normal(size=leaf.shape) / np.sqrt(leaf.shape[0])).astype(np.float32)
        return np.zeros(leaf.shape, np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@functools.partial(jax.jit, static_argnames=("model", "learning_rate"))
def _autoencoder_step(params, opt_state, batch, model: MotionAutoencoder, learning_rate: float):
    """One Adam step on the reconstruction MSE of batch [B, W, F] (standardized)."""

    def loss_fn(p):
        return jnp.mean(jnp.square(model.apply({"params": p}, batch) - batch))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optax.adam(learning_rate).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def fit_autoencoder(
    motions: Sequence[np.ndarray],
    mean,
    std,
    *,
    window: int,
    latent: int,
    steps: int,
    hidden: int = AUTOENCODER_HIDDEN,
    batch_size: int = AUTOENCODER_BATCH,
    learning_rate: float = AUTOENCODER_LR,
    seed: int = 0,
    log=print,
) -> tuple[Any, np.ndarray]:
    """Train a `MotionAutoencoder` on random windows of clips [T_i, D] (standardized with mean/std) by
    reconstruction MSE with Adam. Returns (params, the loss of every step [steps])."""
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    clips = [(np.asarray(m, np.float32) - mean) / std for m in motions if len(m) >= window]
    if not clips:
        raise EvaluationError(f"no training clip is at least {window} frames long (the autoencoder's window)")
    starts = np.array([len(c) - window + 1 for c in clips])
    model = MotionAutoencoder(int(mean.size), hidden, latent)
    params = init_autoencoder(model, window, seed)
    opt_state = optax.adam(learning_rate).init(params)
    rng = np.random.default_rng(seed)
    losses = np.zeros(steps)
    log_every = max(steps // 10, 1)
    for step in range(steps):
        which = rng.choice(len(clips), size=batch_size, p=starts / starts.sum())
        offsets = (rng.random(batch_size) * starts[which]).astype(np.int64)
        batch = np.stack([clips[c][o : o + window] for c, o in zip(which, offsets, strict=True)])
        params, opt_state, loss = _autoencoder_step(params, opt_state, batch, model, learning_rate)
        losses[step] = float(loss)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            log(f"autoencoder step {step + 1}/{steps}: reconstruction MSE {losses[step]:.4f}")
    return jax.device_get(params), losses


def dataset_fingerprint(dataset) -> str:
    """A short hash of a dataset's record (dataset.json or its equivalent) and statistics."""
    digest = hashlib.sha256(json.dumps(dict(dataset.info), sort_keys=True, default=str).encode())
    digest.update(np.asarray(dataset.mean, np.float32).tobytes())
    digest.update(np.asarray(dataset.std, np.float32).tobytes())
    return digest.hexdigest()[:16]


def autoencoder_dir(config) -> Path:
    """config.eval.autoencoder_dir, or <data.root>/fgd_autoencoder."""
    if config.eval.autoencoder_dir:
        return Path(config.eval.autoencoder_dir)
    if not config.data.root:
        raise EvaluationError("eval.autoencoder_dir and data.root are both empty; set one of them")
    return Path(config.data.root) / "fgd_autoencoder"


def autoencoder_settings(config, dataset) -> dict[str, Any]:
    """What decides an autoencoder: identical settings mean an identical autoencoder."""
    return {
        "format": AUTOENCODER_FORMAT,
        "feature_size": int(dataset.feature_size),
        "window": window_frames(dataset.fps),
        "hidden": AUTOENCODER_HIDDEN,
        "latent": int(config.eval.autoencoder_latent),
        "steps": int(config.eval.autoencoder_steps),
        "batch_size": AUTOENCODER_BATCH,
        "learning_rate": AUTOENCODER_LR,
        "seed": int(config.seed),
        "dataset_fingerprint": dataset_fingerprint(dataset),
        "representation": dataset.representation,
        "fps": float(dataset.fps),
    }


def _flatten(params) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {"/".join(k.key for k in path): np.asarray(leaf) for path, leaf in leaves}


def _unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *outer, last = key.split("/")
        node = tree
        for part in outer:
            node = node.setdefault(part, {})
        node[last] = value
    return tree


def _read_settings(directory: Path) -> dict[str, Any]:
    path = directory / "autoencoder.json"
    if not path.is_file():
        raise EvaluationError(
            f"{directory}: not an FGD autoencoder folder (no autoencoder.json); train one with "
            f"`python launch.py --mode train_autoencoder --workdir <run>` (or --config <config>), or set "
            "eval.autoencoder_dir"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise EvaluationError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        raise EvaluationError(
            f"{path}: expected a JSON object with a 'settings' object, as --mode train_autoencoder writes"
        )
    if record["settings"].get("format") != AUTOENCODER_FORMAT:
        raise EvaluationError(f"{path}: format is not {AUTOENCODER_FORMAT!r}")
    return record


def save_autoencoder(directory, params, mean, std, settings: dict[str, Any], trained: dict[str, Any]) -> Path:
    """Write `autoencoder.npz` (params, mean, std) and `autoencoder.json` (settings, training summary) into
    `directory`, which must not exist or be empty. They are written into a hidden folder beside it,
    `.<name>.partial-<host>-<pid>-<random>`, renamed to `directory` when complete; a failed or interrupted
    write (a full disk: an OSError naming the file; Ctrl-C) removes that folder, and one left by a killed
    process of this host is removed when `directory` is next written (files.staged_folder)."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise EvaluationError(
            f"{directory}: exists and is not empty; refusing to write an autoencoder over it"
        )
    arrays = {f"params/{k}": v for k, v in _flatten(params).items()}
    record = {"settings": settings, "trained": trained}
    with files.staged_folder(directory, "partial") as staging, files.writing(directory, staging):
        with files.writing(staging / "autoencoder.npz"):
            np.savez(
                staging / "autoencoder.npz",
                mean=np.asarray(mean, np.float32),
                std=np.asarray(std, np.float32),
                **arrays,
            )
        (staging / "autoencoder.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        if directory.exists():
            directory.rmdir()  # empty, checked above
        staging.rename(directory)
    return directory


def load_autoencoder(directory) -> FgdEncoder:
    """The FgdEncoder saved in `directory` by `save_autoencoder`, with its training summary (`trained`)
    and the sha256 of the very bytes of autoencoder.npz its weights were read from (`weights_sha256`)."""
    directory = Path(directory)
    record = _read_settings(directory)
    path = directory / "autoencoder.npz"
    redo = (
        "train the autoencoder again into a new folder (--mode train_autoencoder with "
        "--config.eval.autoencoder_dir=<new folder>), or copy the whole folder it was saved in"
    )
    if not path.is_file():
        raise EvaluationError(f"{path}: missing (autoencoder.json is there without its weights); {redo}")
    weights = path.read_bytes()
    try:  # a damaged or foreign file had said "pickled (object) data", or a bare KeyError
        with np.load(io.BytesIO(weights), allow_pickle=False) as data:
            flat = {key[len("params/") :]: data[key] for key in data.files if key.startswith("params/")}
            mean, std = data["mean"], data["std"]
    except (ValueError, KeyError, EOFError, OSError, zipfile.BadZipFile) as error:
        raise EvaluationError(
            f"{path}: not the weights --mode train_autoencoder writes (an .npz of params/*, mean and std): "
            f"{error}; {redo}"
        ) from None
    trained = record.get("trained")
    return FgdEncoder(
        _unflatten(flat),
        mean,
        std,
        record["settings"],
        trained=trained if isinstance(trained, dict) else None,
        weights_sha256=hashlib.sha256(weights).hexdigest(),
    )


def train_autoencoder(config, log=print) -> Path:
    """`launch.py --mode train_autoencoder`: train the FGD autoencoder on the training split for
    eval.autoencoder_steps steps and save it to `autoencoder_dir(config)`. An existing folder is never
    overwritten: with identical settings there is nothing to do, otherwise an error names it."""
    from motion_ddpm_jax.data import beat

    dataset = beat.dataset_from_config(config, log=log)
    directory = autoencoder_dir(config)
    settings = autoencoder_settings(config, dataset)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        if not (directory / "autoencoder.json").is_file():  # someone else's folder, or a file
            what = "a folder of other files" if directory.is_dir() else "a file"
            raise EvaluationError(
                f"{directory} is {what} (no autoencoder.json: not an FGD autoencoder); it is left as it is. "
                "Set eval.autoencoder_dir to a new or empty folder for the autoencoder"
            )
        saved = _read_settings(directory)["settings"]
        if saved == json.loads(json.dumps(settings)):
            log(f"{directory}: an FGD autoencoder with these settings exists already; nothing to do")
            return directory
        changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        raise EvaluationError(
            f"{directory} holds an FGD autoencoder with other settings ({', '.join(changed)}); it is left as "
            f"it is. Set eval.autoencoder_dir to a new folder, or delete that one yourself"
        )
    if settings["steps"] < 1:
        raise EvaluationError(f"eval.autoencoder_steps must be >= 1, got {settings['steps']}")
    start = time.perf_counter()
    motions = dataset.split("train").motions
    if not any(len(m) >= settings["window"] for m in motions):
        longest = max((len(m) for m in motions), default=0)
        raise EvaluationError(
            f"no training clip of data.root={dataset.root} is at least {settings['window']} frames long, "
            f"the FGD autoencoder's window ({AUTOENCODER_WINDOW_S:g} s at {float(dataset.fps):g} fps; the "
            f"longest of its {len(motions)} training clips has {longest}): FGD needs data of clips of a "
            "second or more"
        )
    log(
        f"training the FGD autoencoder on {len(motions)} clips ({settings['window']}-frame windows, "
        f"latent {settings['latent']}) for {settings['steps']} steps, to be saved in {directory} "
        "(eval.autoencoder_dir)"
    )
    params, losses = fit_autoencoder(
        motions,
        dataset.mean,
        dataset.std,
        window=settings["window"],
        latent=settings["latent"],
        steps=settings["steps"],
        hidden=settings["hidden"],
        batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
        seed=settings["seed"],
        log=log,
    )
    seconds = time.perf_counter() - start
    tail = max(len(losses) // 20, 1)
    trained = {
        "initial_loss": float(losses[:tail].mean()),
        "final_loss": float(losses[-tail:].mean()),
        "seconds": round(seconds, 2),
        "dataset_root": str(dataset.root),
        "train_clips": len(motions),
    }
    save_autoencoder(directory, params, dataset.mean, dataset.std, settings, trained)
    log(
        f"saved the FGD autoencoder to {directory} ({seconds:.1f}s; reconstruction MSE "
        f"{trained['final_loss']:.4f} over its last {tail} steps, {trained['initial_loss']:.4f} over its "
        "first)"
    )
    return directory


def fgd_encoder(
    config, dataset, workdir: str | os.PathLike | None = None
) -> tuple[FgdEncoder | None, list[str]]:
    """The FGD autoencoder trained on `dataset`, or None and a note that says why not; where there is none,
    the note's command trains it for the run in `workdir` (the one evaluated; None: `<run>`)."""
    directory = autoencoder_dir(config)
    run = "<run>" if workdir is None else shlex.quote(os.fspath(workdir))
    # For the data evaluated: --workdir alone would take the data of the run's checkpoint (and save into
    # its <data.root>/fgd_autoencoder), which an evaluation given another data.root does not evaluate on
    # nor look in. A command to run as it is shown, but for a new folder's name.
    for_this_data = (
        f"`python launch.py --mode train_autoencoder --workdir {run} --config.data.root="
        f"{shlex.quote(os.fspath(dataset.root))}"
    )
    into_new_folder = (
        f"{for_this_data} --config.eval.autoencoder_dir=<a new folder>` (or --config <config> in place of "
        "--workdir)"
    )
    if not (directory / "autoencoder.json").is_file() and directory.exists():
        if not directory.is_dir() or any(directory.iterdir()):
            # (the note below had advised training into it, which train_autoencoder refuses)
            what = "a folder of other files" if directory.is_dir() else "a file"
            return None, [
                f"FGD skipped: eval.autoencoder_dir {directory} is {what}, not an FGD autoencoder (no "
                "autoencoder.json); set --config.eval.autoencoder_dir to the folder `python launch.py --mode "
                f"train_autoencoder` saved one in, or train one into a new folder with {into_new_folder} and "
                "evaluate with that folder"
            ]
    if not (directory / "autoencoder.json").is_file():
        return None, [
            f"FGD skipped: no autoencoder in {directory}; train one with {for_this_data}` (or --config "
            "<config> in place of --workdir; eval.autoencoder_steps steps"
            + (
                f"; with --config.eval.autoencoder_dir={directory}, as here"
                if config.eval.autoencoder_dir
                else ""
            )
            + ")"
        ]
    encoder = load_autoencoder(directory)
    here = dataset_fingerprint(dataset)
    if encoder.settings.get("dataset_fingerprint") != here:
        # (the fingerprint hashes dataset.json and the statistics: another preparation of the same
        # recordings, elsewhere, differs too; the note says which data and what to do)
        return None, [
            f"FGD skipped: the autoencoder in {directory} was trained on other data (data.root="
            f"{encoder.trained.get('dataset_root') or '(not recorded)'}, dataset fingerprint "
            f"{encoder.settings.get('dataset_fingerprint')}) than data.root={dataset.root} (fingerprint "
            f"{here}: its dataset.json or mean/std differ); train one for this data with {into_new_folder}, "
            "then evaluate with that eval.autoencoder_dir"
        ]
    return encoder, []


def autoencoder_record(directory, encoder: FgdEncoder) -> dict[str, Any]:
    """What identifies the FGD autoencoder a report used: its folder (absolute), the settings and training
    summary stored with it (seed, steps, latent size, window; final_loss where stored, else None) and the
    sha256 of its weights file, autoencoder.npz."""
    return {
        "directory": os.path.abspath(directory),
        "settings": dict(encoder.settings),
        "final_loss": encoder.trained.get("final_loss"),
        "trained": dict(encoder.trained),
        "weights_sha256": encoder.weights_sha256,
    }
