"""Sampling: a checkpoint folder -> motion for captions, with classifier-free guidance and DDPM, DDIM or
DPM-Solver++(2M).

`load_model(workdir)` rebuilds the model from the checkpoint alone (config, statistics, tokenizer and
skeleton travel in its metadata); `generate(loaded, captions, ...)` runs the whole sampling loop as one
compiled program per batch (`lax.scan`s over chunks of steps, `diffusion.PreparedDenoiser`), spread over
the local devices; `run(config, workdir)` is `launch.py --mode sample`: it reads `config.sample` and writes
`.npy`, `.bvh` and an animation under a fresh output folder.

Determinism: sample i (caption-major: caption c, draw k is i = c * num_samples + k) draws everything from
key_i = fold_in(key(seed), i): its starting noise x_T = normal(fold_in(key_i, 0), [T, D]) and its step
noises from the loop key fold_in(key_i, 1). T is the frames of the sample's compiled call: the first n
rows of such a draw are those of a draw of n rows in JAX's partitionable threefry, which `generate` sets
for its sampler whatever jax_threefry_partitionable says (without it the rows change with T, and a sample
with the lengths of the captions beside it). So a sample's noise does not depend on the batch size, the
number of devices or the other captions, and the sample itself only to float rounding (the products of a
batch of another size may sum in another order: ~1e-6 relative).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import importlib
import json
import math
import numbers
import os
import re
import time
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from motion_ddpm_jax import checkpoint, diffusion, humanml3d, kinematics, provenance, representation, text
from motion_ddpm_jax import config as config_lib
from motion_ddpm_jax import files as files_lib
from motion_ddpm_jax import model as model_lib
from motion_ddpm_jax.data import bvh, pipeline
from motion_ddpm_jax.errors import ProjectWarning, UserError
from motion_ddpm_jax.metrics import position_unit
from motion_ddpm_jax.skeleton import Skeleton

SAMPLERS = ("ddpm", "ddim", "dpmpp_2m")
STEPPED = ("ddim", "dpmpp_2m")  # the samplers that take sample.steps steps spaced by sample.ddim_spacing
SAMPLER_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpmpp_2m": "DPM-Solver++(2M)"}
BVH_ORDER = "ZXY"  # the Euler channel order of BEAT's BVH files (and of the synthetic demo set)
_METADATA_KEYS = ("config", "tokenizer", "mean", "std", "representation", "feature_size", "fps")


class SampleError(UserError):
    """A bad sampling request: names the `sample.*` field and what it accepts."""


class CaptionCutWarning(ProjectWarning):
    """Captions `generate` was given that take more tokens than the model reads (model.text_max_length
    less bos and eos): it samples from their first tokens only, as training read its captions."""


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedModel:
    """Everything sampling needs, restored from one checkpoint.

    mean, std: f32[D] normalisation statistics; skeleton: None when the data have none (HumanML3D);
    schedule: the training run's diffusion schedule; step: the training step the checkpoint was saved at
    (its train_state's, which a folder copied or renamed to another step keeps; the folder's name where it
    holds none).

    Other weights (edited or averaged parameters): `dataclasses.replace(loaded, params=new)`. Changing
    `loaded.params` in place after a first `generate` mixes old and new: the sampler keeps the device copy
    it made of them, while the text encoder reads the new ones.
    """

    model: model_lib.MotionTransformer
    params: Any
    metadata: dict[str, Any]
    tokenizer: text.Tokenizer
    mean: np.ndarray
    std: np.ndarray
    skeleton: Skeleton | None
    representation: str
    fps: float
    schedule: diffusion.Schedule
    prediction: str
    clip_x0: float | None
    max_motion_length: int
    text_max_length: int
    step: int
    # Device copies of the parameters; init=False: dataclasses.replace starts a fresh one.
    _cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

    @property
    def config(self) -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(self.metadata["config"])


def _pick(step_option: str, step: int) -> str:
    """The caller's way to pick checkpoint `step`: its option set to the step, or its `<step>` filled in
    (train.init_from's had read `--config.train.init_from=<workdir>/checkpoints/<step>=10`)."""
    return step_option.replace("<step>", str(step)) if "<step>" in step_option else f"{step_option}={step}"


def _removed_while_read(directory: Path, step: int, wait_s: float = 2.0) -> bool:
    """Whether checkpoint `step` failed to read because a run still training removes it (train.max_to_keep).
    Orbax deletes a folder's files before the folder, so a read can fail while the folder is still there
    (it had been called damaged, sampling or fine-tuning from a run in training): where a later checkpoint
    exists, the folder is given `wait_s` to go."""
    folder = directory / str(step)
    later = folder.exists() and any(p.name.isdigit() and int(p.name) > step for p in directory.iterdir())
    deadline = time.monotonic() + (wait_s if later else 0.0)
    while folder.exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def load_model(
    workdir: str | os.PathLike,
    step: int | None = None,
    use_ema: bool = True,
    step_option: str = "--config.sample.checkpoint_step",
) -> LoadedModel:
    """Restore checkpoint `step` (None: the latest) of `workdir` for sampling.

    CheckpointError (naming the folder) when the folder is missing, empty, incomplete, or does not hold a
    model this code can rebuild; where another checkpoint would do, it says so with `step_option`, the
    caller's way to pick a step (launch.py's config field by default; bench_solvers.py its own flag; a
    path with `<step>` in it, filled in, for train.init_from's <workdir>/checkpoints/<step>).
    """
    if step is not None and not (_is_int(step) and step >= 0):
        # int() had read step=20.7 as checkpoint 20 without a word, and -1 (the config's "latest") as a
        # step to look for
        raise checkpoint.CheckpointError(
            f"{checkpoint.checkpoint_dir(workdir)}: the checkpoint step to sample from must be an integer "
            f">= 0, or None for the latest (the config's {step_option}=-1); got {step!r}"
        )
    requested = step
    for attempt in range(3):
        reader = checkpoint.Checkpointer(workdir, read_only=True)
        try:
            step = reader.latest_step() if requested is None else int(requested)
            if step is None:
                misnamed = checkpoint.misnamed_checkpoints(reader.directory, reader.all_steps())
                raise checkpoint.CheckpointError(
                    f"{reader.directory}: holds no complete checkpoint"
                    + (f"; {checkpoint.misnamed_note(reader.directory, misnamed)}" if misnamed else "")
                )
            if requested is not None and step not in (steps := reader.all_steps()):
                held = [f for f in checkpoint.misnamed_checkpoints(reader.directory, steps) if f[1] == step]
                if held:  # (else restore_params says which steps there are)
                    raise checkpoint.CheckpointError(
                        f"{reader.directory}: no checkpoint at step {step}; available: {sorted(steps)}; "
                        + checkpoint.misnamed_note(reader.directory, held)
                    )
            try:
                params, metadata = reader.restore_params(step, use_ema=use_ema)
                recorded = reader.recorded_step(step)
                break
            except checkpoint.CheckpointError:
                raise
            except (OSError, ValueError, KeyError, TypeError) as error:
                if _removed_while_read(reader.directory, step):
                    if requested is None and attempt < 2:
                        continue  # the latest one now
                    raise checkpoint.CheckpointError(
                        f"{reader.directory}/{step} was removed while it was read: the run is still training "
                        "and keeps only its last train.max_to_keep checkpoints; use the latest ("
                        + (f"no {step_option}" if "<step>" not in step_option else "the workdir, no step")
                        + ") or a copy"
                    ) from None
                others = [s for s in reader.all_steps() if s != step]
                way = (
                    f"; the checkpoints {others} are untouched: use one ({_pick(step_option, others[-1])})"
                    if others
                    else ""
                )
                raise checkpoint.CheckpointError(
                    f"{reader.directory}/{step}: cannot be restored ({type(error).__name__}: "
                    f"{str(error)[:300]}); it is damaged or incomplete (a copy cut short?){way}"
                ) from None
        finally:
            reader.close()
    where = f"{reader.directory}/{step}"
    if requested is None:
        later = [f for f in checkpoint.misnamed_checkpoints(reader.directory, [step]) if (f[1] or -1) > step]
        if later:  # the latest Orbax reads is not the run's latest
            warnings.warn(
                f"{where} is the latest checkpoint Orbax reads, but "
                f"{checkpoint.misnamed_note(reader.directory, later)}",
                ProjectWarning,
                stacklevel=2,
            )
    if recorded is not None and recorded != step:
        # A folder copied or renamed to another step (Orbax reads the step from the name) had put its
        # samples in samples/step_<name>, its index.json, eval's metrics file and a fine-tune's record
        # under a step the model never trained to: they name the step it holds, and this says so.
        warnings.warn(
            f"{where} holds the checkpoint of training step {recorded} (its train_state's step), not "
            f"{step}: a copy or renaming of checkpoint {recorded}? Its outputs are named step {recorded}",
            ProjectWarning,
            stacklevel=2,
        )
        step = recorded
    return loaded_from_params(params, metadata, step, where)


def loaded_from_params(params, metadata: Any, step: int, where: str) -> LoadedModel:
    if not isinstance(metadata, dict):
        raise checkpoint.CheckpointError(f"{where}: its metadata is not a JSON object")
    missing = [key for key in _METADATA_KEYS if key not in metadata]
    if missing:
        raise checkpoint.CheckpointError(
            f"{where}: its metadata lacks {', '.join(missing)}; it was not written by train.run"
        )
    try:
        config = ml_collections.ConfigDict(metadata["config"])
        tokenizer = text.Tokenizer.from_dict(metadata["tokenizer"], source=f"{where} metadata tokenizer")
        skeleton = metadata.get("skeleton")
        skeleton = None if skeleton is None else Skeleton.from_dict(skeleton, f"{where} metadata skeleton")
        feature_size = int(metadata["feature_size"])
        mean = np.asarray(metadata["mean"], np.float32)
        std = np.asarray(metadata["std"], np.float32)
        pipeline.destandardize(np.zeros((1, feature_size), np.float32), mean, std)  # checks the statistics
        model = model_lib.model_from_config(
            config, input_feats=feature_size, text_vocab_size=tokenizer.vocab_size
        )
        schedule = diffusion.make_schedule(config.diffusion.schedule, config.diffusion.steps)
        prediction = str(config.diffusion.prediction)
        if prediction not in diffusion.PREDICTION_KINDS:
            raise ValueError(
                f"diffusion.prediction {prediction!r} is not one of {diffusion.PREDICTION_KINDS}"
            )
        expected = model_lib.param_shapes(model)
        clip_x0 = float(config.diffusion.clip_x0)
        max_motion_length = int(config.data.max_motion_length)
        text_max_length = int(config.model.text_max_length)
        fps = float(metadata["fps"])
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"its fps is {metadata['fps']!r}, expected a frame rate > 0")
        kind = str(metadata["representation"])
        # A skeleton that does not fit the features failed only in decoding, after the whole sampler ran.
        if skeleton is not None and kind in representation.REPRESENTATIONS:
            needed = representation.feature_size(skeleton, kind)
            if needed != feature_size:
                raise ValueError(
                    f"its {kind} features are {feature_size} a frame, but its skeleton of "
                    f"{skeleton.num_joints} joints gives {needed}"
                )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise checkpoint.CheckpointError(f"{where}: cannot rebuild its model ({error})") from None
    got_structure, want_structure = jax.tree.structure(params), jax.tree.structure(expected)
    mismatched = [
        f"{jax.tree_util.keystr(path)}: saved {np.shape(got)}, the config gives {want.shape}"
        for (path, want), got in zip(
            jax.tree_util.tree_flatten_with_path(expected)[0], jax.tree.leaves(params), strict=False
        )
        if np.shape(got) != want.shape
    ]
    if got_structure != want_structure or mismatched:
        raise checkpoint.CheckpointError(
            f"{where}: its parameters do not match the model its own config describes "
            f"({'; '.join(mismatched[:3]) or 'different parameter names'})"
        )
    return LoadedModel(
        model=model,
        params=jax.tree.map(lambda p: np.asarray(p, np.float32), params),
        metadata=metadata,
        tokenizer=tokenizer,
        mean=mean,
        std=std,
        skeleton=skeleton,
        representation=kind,
        fps=fps,
        schedule=schedule,
        prediction=prediction,
        clip_x0=clip_x0 if clip_x0 > 0 else None,
        max_motion_length=max_motion_length,
        text_max_length=text_max_length,
        step=int(step),
    )


# ------------------------------------------------------------------------------------------ generation
def is_number(value) -> bool:
    """A real number (numpy's included), not a bool (a bool is an int to Python): what sampling's eta and
    guidance_scale must be, and what evaluate reads as a metric's value."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _frame_counts(num_frames, num_captions: int, max_length: int) -> list[int]:
    """num_frames (an int, or one int per caption: a sequence or 1-D integer array) -> one length per
    caption, validated."""
    counts = [num_frames] * num_captions if _is_int(num_frames) else num_frames
    if isinstance(counts, np.ndarray) and counts.ndim == 1:
        counts = counts.tolist()  # numpy integers become ints, floats stay floats (refused below)
    if isinstance(counts, str) or not isinstance(counts, Sequence) or not all(_is_int(n) for n in counts):
        raise SampleError(
            f"sample.num_frames must be an integer or one integer per caption, got {num_frames!r}"
        )
    if len(counts) != num_captions:
        raise SampleError(
            f"sample.num_frames gives {len(counts)} lengths for {num_captions} captions; give one per caption"
        )
    bad = [int(n) for n in counts if not 1 <= n <= max_length]
    if bad:
        raise SampleError(
            f"sample.num_frames must be in [1, {max_length}] (data.max_motion_length of the checkpoint's "
            f"run), got {bad[0]}"
        )
    return [int(n) for n in counts]


def _check_request(
    loaded: LoadedModel, captions, num_samples, sampler, steps, eta, spacing, guidance_scale, seed, batch
):
    if isinstance(captions, str) or not isinstance(captions, Sequence) or not captions:
        raise SampleError(
            f"captions must be a non-empty list of strings (sample.text), got {captions!r:.100}"
        )
    if not all(isinstance(c, str) for c in captions):
        raise SampleError("captions must be strings (sample.text)")
    if not (_is_int(num_samples) and num_samples >= 1):
        raise SampleError(f"sample.num_samples must be an integer >= 1, got {num_samples!r}")
    if sampler not in SAMPLERS:
        raise SampleError(f"sample.sampler must be one of {SAMPLERS}, got {sampler!r}")
    stepped = sampler in STEPPED
    if stepped and not (_is_int(steps) and 1 <= steps <= loaded.schedule.num_steps):
        raise SampleError(
            f"sample.steps must be an integer in [1, {loaded.schedule.num_steps}] (diffusion.steps of the "
            f"checkpoint's run), got {steps!r}"
        )
    if stepped and spacing not in diffusion.DDIM_SPACINGS:
        raise SampleError(f"sample.ddim_spacing must be one of {diffusion.DDIM_SPACINGS}, got {spacing!r}")
    if stepped and spacing == "leading" and steps == 1:
        raise SampleError(
            "sample.steps=1 with sample.ddim_spacing=leading takes its one step at t=0: the starting noise "
            "would be returned as the sample. Take more steps, or sample.ddim_spacing=trailing (its one "
            f"step is t={loaded.schedule.num_steps - 1})"
        )
    if not (is_number(eta) and 0 <= eta <= 1):
        raise SampleError(f"sample.eta must be a number in [0, 1], got {eta!r}")
    if sampler == "dpmpp_2m" and eta != 0:
        raise SampleError(
            f"sample.eta is {eta!r} but sample.sampler=dpmpp_2m is deterministic (it solves the probability "
            "flow ODE, drawing no noise); eta is DDIM's: set sample.eta=0, or sample.sampler=ddim"
        )
    if not (is_number(guidance_scale) and math.isfinite(guidance_scale) and guidance_scale >= 0):
        raise SampleError(
            f"sample.guidance_scale must be a finite number >= 0 (0: the unconditional model, 1: the "
            f"conditional one), got {guidance_scale!r}"
        )
    dropped = loaded.config.model.get("cond_drop_prob")  # None: not recorded
    if guidance_scale != 1 and dropped is not None and not dropped > 0:
        raise SampleError(
            f"sample.guidance_scale is {guidance_scale:g} but the checkpoint's run trained with "
            f"model.cond_drop_prob={dropped}: the model never learned the unconditional prediction that "
            "guidance extrapolates from. Sample with sample.guidance_scale=1, or train with "
            "model.cond_drop_prob > 0 (0.1 is the default)"
        )
    if not (_is_int(seed) and 0 <= seed < 2**32):
        raise SampleError(f"sample.seed must be an integer in [0, 2**32), got {seed!r}")
    if not (_is_int(batch) and batch >= 1):
        raise SampleError(f"sample.batch_size must be an integer >= 1, got {batch!r}")


@functools.lru_cache(maxsize=32)
def _sample_function(
    model: model_lib.MotionTransformer,
    kind: str,
    clip_x0: float | None,
    sampler: str,
    steps: int,
    eta: float,
    spacing: str,
    guided: bool,
) -> Callable:
    """The compiled sampler of one configuration, shared by every checkpoint of the same architecture
    (it then compiles once per input shape).

    Returns pmap(vmap(sample_one)) of (params, schedule, seed, index, frame_mask, caption, caption_mask,
    empty, empty_mask, scale): index and the three after it are [devices, per_device, ...], the others
    shared. Output: x0 f32[devices, per_device, T, D], standardized.
    """

    def sample_one(
        params, schedule, seed, index, frame_mask, caption, caption_mask, empty, empty_mask, scale
    ):
        """Sample `index`: seed u32[], index i32[], frame_mask bool[T], caption f32[L, W] (encoded) and
        caption_mask bool[L], the empty caption's encoding and mask, scale f32[] -> x0 f32[T, D]."""
        sample_key = jax.random.fold_in(jax.random.key(seed), index)
        x_T = jax.random.normal(
            jax.random.fold_in(sample_key, 0), (frame_mask.shape[0], model.input_feats), jnp.float32
        )
        x_T, mask = x_T[None], frame_mask[None]  # a batch of one: [1, T, D], [1, T]
        loop_rng = jax.random.fold_in(sample_key, 1)
        if guided:  # one forward pass of [conditional; unconditional]
            encoded, text_mask = jnp.stack([caption, empty]), jnp.stack([caption_mask, empty_mask])
        else:
            encoded, text_mask = caption[None], caption_mask[None]
        denoise = conditioned_denoiser(model, params, encoded, text_mask, mask, scale if guided else None)

        if sampler == "ddpm":
            x0 = diffusion.ddpm_sample_loop(schedule, denoise, x_T, loop_rng, kind, clip_x0)
        elif sampler == "ddim":
            x0 = diffusion.ddim_sample_loop(
                schedule, denoise, x_T, loop_rng, kind, steps, eta, clip_x0, spacing
            )
        elif sampler == "dpmpp_2m":
            x0 = diffusion.dpmpp_2m_sample_loop(schedule, denoise, x_T, kind, steps, clip_x0, spacing)
        else:  # a name added to SAMPLERS without its loop here
            raise ValueError(f"sampler {sampler!r} has no sampling loop in _sample_function")
        return x0[0]

    per_sample = (None, None, None, 0, 0, 0, 0, None, None, None)
    return jax.pmap(jax.vmap(sample_one, in_axes=per_sample), in_axes=per_sample)


MODULATION_CHUNK = 50  # steps whose block modulations are computed together (memory ~ 100 KB x rows x chunk)


def conditioned_denoiser(
    model: model_lib.MotionTransformer,
    params,
    text: jax.Array,
    text_mask: jax.Array,
    mask: jax.Array,
    guidance_scale: jax.Array | float | None = None,
    chunk: int | None = None,
) -> diffusion.PreparedDenoiser:
    """The model as the sample loops' denoiser for captions encoded once (`model_lib.encode_text`).

    text f32[R, L, W] and text_mask bool[R, L]: R = B rows, one per sample of x_t [B, T, D]; with
    `guidance_scale` s, R = 2B: the B conditional rows, then the B unconditional (empty caption) rows,
    and the output is u + s (c - u) from one pass over the 2B rows. mask bool[B, T] marks real frames.
    Hoisted out of the steps: the captions' pooled embedding and what every cross-attention attends to
    (once), the step embeddings and every block's (scale, shift) (once per chunk of at most `chunk` steps,
    as [steps * R] rows; chunk None: MODULATION_CHUNK); a step then runs `MotionTransformer.denoise`
    alone. Same function as calling the model. Its `apply` does not read the `t` it is given: the
    prepared slice is the step (a sampler that evaluates the model between its scheduled steps must
    `prepare` those steps too).
    """
    variables = {"params": params}
    condition = model.apply(variables, text, text_mask, method=model_lib.MotionTransformer.condition_on_text)
    rows = text.shape[0]
    guided = guidance_scale is not None
    frame_mask = jnp.concatenate([mask, mask]) if guided else mask

    def modulations(timesteps):
        steps = timesteps.shape[0]
        emb = jnp.tile(condition["emb"], (steps, 1))  # row r of step k at k * rows + r
        return model.apply(
            variables, jnp.repeat(timesteps, rows), emb, method=model_lib.MotionTransformer.modulations
        )

    # Every block's (scale, shift) packed side by side into one array [steps, rows, sum of widths]: the
    # loops then carry and slice one array per step instead of one per block (3 x layers).
    shapes = jax.eval_shape(modulations, jnp.zeros((1,), jnp.int32))
    leaves, structure = jax.tree.flatten(shapes)
    bounds = np.cumsum([0] + [leaf.shape[-1] for leaf in leaves])

    def prepare(timesteps):
        packed = jnp.concatenate(jax.tree.leaves(modulations(timesteps)), axis=-1)
        return packed.reshape(timesteps.shape[0], rows, -1)

    def apply(x_t, t, packed):
        del t  # the modulations carry the step
        unpacked = [packed[:, start:end] for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
        x = jnp.concatenate([x_t, x_t]) if guided else x_t
        out = model.apply(
            variables,
            x,
            frame_mask,
            condition,
            jax.tree.unflatten(structure, unpacked),
            method=model_lib.MotionTransformer.denoise,
        )
        if not guided:
            return out
        conditional, unconditional = jnp.split(out, 2)
        return unconditional + guidance_scale * (conditional - unconditional)

    return diffusion.PreparedDenoiser(prepare, apply, MODULATION_CHUNK if chunk is None else chunk)


def _replicated(loaded: LoadedModel, name: str, make: Callable[[], Any], devices: int) -> Any:
    """`make()` placed once on each of the first `devices` local devices (those a pmap over `devices`
    runs on), cached on `loaded` (no copy per sampler call). One placement per name is kept: a call
    with another device count replaces it, so the copies never outnumber the devices."""
    key = ("replicated", name, devices)
    if key not in loaded._cache:
        for stale in [k for k in loaded._cache if k[:2] == ("replicated", name)]:
            del loaded._cache[stale]
        mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:devices]), ("devices",))
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        loaded._cache[key] = jax.device_put(make(), replicated)
    return loaded._cache[key]


@functools.lru_cache(maxsize=8)
def _encoder(model: model_lib.MotionTransformer) -> Callable:
    """(params, tokens i32[C, L], mask bool[C, L]) -> the text encoder's output f32[C, L, W], compiled."""
    return jax.jit(lambda params, tokens, mask: model_lib.encode_text(model, params, tokens, mask))


@functools.lru_cache(maxsize=8)
def _decoder(skeleton: Skeleton | None, kind: str) -> Callable:
    """features f32[N, T, D] -> global joint positions f32[N, T, J, 3], compiled (the humanml3d kind:
    HumanML3D's 263 features or KIT-ML's 251, the joint count from D)."""
    if kind == "humanml3d":
        return jax.jit(humanml3d.recover_from_ric)
    return jax.jit(lambda features: representation.decode(features, skeleton, kind))


def joint_parents(loaded: LoadedModel) -> tuple[int, ...] | None:
    """The parent of each joint of `generate`'s positions (-1 for the root), None where it gives none:
    the data's skeleton, or the HumanML3D layout's tree (`humanml3d.layout`: HumanML3D's 22 T2M joints
    for 263 features, KIT-ML's 21 MMM joints for 251)."""
    found = humanml3d.layout(loaded.representation, loaded.model.input_feats)
    if found is not None:
        return found.parents
    if loaded.skeleton is not None and loaded.representation in representation.REPRESENTATIONS:
        return tuple(int(p) for p in loaded.skeleton.parents)
    return None


def devices_for(samples: int, batch_size: int | None = None) -> int:
    """How many local devices `generate` splits `samples` over, `batch_size` at a time: all, but no more
    than one per sample of a call (no device then computes a padded copy of a lone sample)."""
    per_call = int(samples) if batch_size is None else min(int(samples), int(batch_size))
    return max(1, min(jax.local_device_count(), per_call))


def call_split(total: int, batch_size: int, devices: int) -> int:
    """Samples per device of each compiled call: as few calls as `total` needs, never more than
    `batch_size` samples in a call (devices <= batch_size, as `devices_for` gives)."""
    return max(1, min(-(-int(total) // devices), int(batch_size) // devices))


LENGTH_BUCKET = 16  # frames: a call of `generate`'s several runs at a multiple of this (its samples' longest)


def call_plan(lengths: np.ndarray, chunk: int, group_lengths: bool = True) -> list[tuple[np.ndarray, int]]:
    """`generate`'s compiled calls for samples of `lengths` [N], `chunk` samples a call: [(the call's
    sample indices [chunk], its frames)]. A short call repeats its last sample. One call, or
    `group_lengths` off: calls in sample order, each at the longest length T, the short call last. Else
    the samples in order of length (ties in sample order), each call at its own longest length rounded
    up to a multiple of LENGTH_BUCKET, T at most: at most T / LENGTH_BUCKET + 1 programs, whatever the
    number of calls; the short call is the first, so that its repeats run at the shortest samples'
    length, not at T (300 samples of 40-196 frames in calls of 64: 20 repeats at 64 frames, not 196)."""
    total = len(lengths)
    longest = int(np.max(lengths))
    grouped = group_lengths and total > chunk
    order = np.argsort(lengths, kind="stable") if grouped else np.arange(total)
    starts = range(0, total, chunk)
    if grouped and total % chunk:
        starts = [total % chunk - chunk, *range(total % chunk, total, chunk)]
    plan = []
    for start in starts:
        taken = np.arange(max(start, 0), min(start + chunk, total))
        index = order[np.concatenate([taken, np.full(chunk - len(taken), taken[-1])])]
        frames = longest
        if grouped:
            frames = min(longest, -(-int(lengths[index].max()) // LENGTH_BUCKET) * LENGTH_BUCKET)
        plan.append((index, frames))
    return plan


GROUP_LENGTHS = {"auto": None, "true": True, "false": False}  # sample.group_lengths -> generate's


def sampler_settings(sample_config) -> dict[str, Any]:
    """generate()'s sampler keywords from a config's `sample` section (one place for every caller)."""
    group = str(sample_config.group_lengths)  # spelled as validate's CHOICES take it
    if group not in GROUP_LENGTHS:
        raise SampleError(
            f"config field sample.group_lengths is {sample_config.group_lengths!r}; expected one of "
            f"{', '.join(GROUP_LENGTHS)}"
        )
    return {
        "sampler": str(sample_config.sampler),
        "steps": int(sample_config.steps),
        "eta": float(sample_config.eta),
        "spacing": str(sample_config.ddim_spacing),
        "guidance_scale": float(sample_config.guidance_scale),
        "seed": int(sample_config.seed),
        "batch_size": int(sample_config.batch_size),
        "group_lengths": GROUP_LENGTHS[group],
    }


def check_settings(loaded: LoadedModel, settings: dict[str, Any]) -> None:
    """Refuse `sampler_settings` that `generate` would refuse for this checkpoint (SampleError naming the
    field), before a caller announces, loads or prepares anything for them."""
    _check_request(
        loaded,
        ["caption"],
        1,
        settings["sampler"],
        settings["steps"],
        settings["eta"],
        settings["spacing"],
        settings["guidance_scale"],
        settings["seed"],
        settings["batch_size"],
    )


def settings_used(settings: dict[str, Any], loaded: LoadedModel, use_ema: bool) -> dict[str, Any]:
    """The sampler settings a generation used, for index.json and eval's report: `sampler_settings`
    keywords as `generate` applies them, under the config's field names. DDPM takes every diffusion step
    whatever sample.steps says and reads no ddim_spacing; only DDIM reads eta (the settings a sampler
    does not read are None); the checkpoint step is the one restored."""
    sampler = settings["sampler"]
    stepped = sampler in STEPPED
    return {
        "sampler": sampler,
        "steps": int(settings["steps"]) if stepped else int(loaded.schedule.num_steps),
        "eta": float(settings["eta"]) if sampler == "ddim" else None,
        "ddim_spacing": str(settings["spacing"]) if stepped else None,
        "guidance_scale": float(settings["guidance_scale"]),
        "seed": int(settings["seed"]),
        "use_ema": bool(use_ema),
        "checkpoint_step": int(loaded.step),
    }


def settings_text(used: dict[str, Any]) -> str:
    """`settings_used`'s settings as a log line says them, those the sampler does not read left out:
    'ddim, 50 steps, eta 0, leading spacing, guidance 1, seed 0, EMA parameters'."""
    parts = [used["sampler"], f"{used['steps']} steps"]
    if used["eta"] is not None:
        parts.append(f"eta {used['eta']:g}")
    if used["ddim_spacing"] is not None:
        parts.append(f"{used['ddim_spacing']} spacing")
    parts += [f"guidance {used['guidance_scale']:g}", f"seed {used['seed']}"]
    parts.append("EMA parameters" if used["use_ema"] else "raw parameters")
    return ", ".join(parts)


def unread_settings_note(settings: dict[str, Any], loaded: LoadedModel) -> str | None:
    """A note where sample.sampler=ddpm is given a DDIM / DPM-Solver++ setting (`sampler_settings`
    keywords) other than its default: ddpm takes every diffusion step, with the posterior's noise, so
    sample.steps, sample.eta and sample.ddim_spacing change nothing (a sweep over them would repeat one
    sample without a word)."""
    if settings["sampler"] != "ddpm":
        return None
    default = config_lib.base_config().sample
    given = {"steps": "steps", "eta": "eta", "spacing": "ddim_spacing"}
    unread = [
        f"sample.{field}={settings[key]!r}" for key, field in given.items() if settings[key] != default[field]
    ]
    if not unread:
        return None
    return (
        f"note: sample.sampler=ddpm takes all {loaded.schedule.num_steps} diffusion steps, drawing the "
        f"posterior's noise at each: {', '.join(unread)} {'is' if len(unread) == 1 else 'are'} not used "
        "(ddim's and dpmpp_2m's settings)"
    )


def spacing_note(loaded: LoadedModel, settings: dict[str, Any]) -> str | None:
    """A note where a stepped sampler's first step (`sampler_settings` keywords) reads the starting noise
    as more than 10% signal: leading spacing with few steps of a schedule (cosine's, 10 steps: 0.15)."""
    if settings["sampler"] not in STEPPED or settings["spacing"] != "leading" or settings["steps"] == 1:
        return None  # (one leading step is refused, saying why)
    num_steps = loaded.schedule.num_steps
    first = int(diffusion.ddim_timesteps(num_steps, min(max(settings["steps"], 1), num_steps))[0])
    signal = float(np.sqrt(np.asarray(loaded.schedule.alphas_cumprod, np.float64)[first]))
    if signal <= 0.1:
        return None
    return (
        f"note: {settings['steps']} {SAMPLER_NAMES[settings['sampler']]} steps with sample.ddim_spacing="
        f"leading start at t={first}, which takes the starting noise for {signal:.0%} signal (sqrt of "
        f"alpha-bar); sample.ddim_spacing=trailing starts at t={num_steps - 1}"
    )


def generate(
    loaded: LoadedModel,
    captions: Sequence[str],
    num_frames: int | Sequence[int] = 60,
    *,
    num_samples: int = 1,
    sampler: str = "ddim",
    steps: int = 50,
    eta: float = 0.0,
    spacing: str = "leading",
    guidance_scale: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
    group_lengths: bool | None = None,
) -> dict[str, Any]:
    """Sample `num_samples` motions per caption (an empty caption, "", samples the unconditional model
    that guidance uses; `--mode sample` refuses one, as a slip of `a||b`). A caption of more tokens than
    model.text_max_length holds (bos and eos besides) is read up to there: a CaptionCutWarning says so.

    num_frames: one length for all captions, or one per caption (a sequence or a 1-D integer array), each
      in [1, max_motion_length].
    sampler: 'ddpm' (ancestral over every diffusion step; `steps`, `eta` and `spacing` unused), 'ddim'
    (`steps` steps, noise level `eta`) or 'dpmpp_2m' (DPM-Solver++(2M): `steps` steps of the second-order
    ODE solver, deterministic: eta must be 0). spacing: the steps of ddim and dpmpp_2m, 'leading' or
    'trailing' (diffusion.ddim_timesteps).
    guidance_scale s: classifier-free guidance, output = u + s * (c - u) with u the model's output for
    the empty caption; s == 1 runs the conditional model alone. batch_size: samples per compiled call
    (at most), split over min(local devices, batch_size, samples) devices (on a CPU, launch.py's
    `--host_devices` makes one device per core: see README, "Performance").

    Returns (N = len(captions) * num_samples, caption-major; T = the longest length):
      motion f32[N, T, D] de-standardized features, zero past each sample's length;
      positions f32[N, T, J, 3] global joint positions, zero past the length (None where `joint_parents`
        is: data without a skeleton; HumanML3D's 263 features decode to its 22 joints in metres, KIT-ML's
        251 to its 21 in millimetres), as decoded: the root starts at the origin (at its skeleton offset for
        the rotation layouts; `ground_offset` gives the shift to stand a sample on the ground, which `run`
        adds to the files it writes), but for the HumanML3D layout, whose root starts at the height its
        features hold (feature 3) and whose files `run` writes as decoded; `check_figure_size` compares their
        size with the data's;
      lengths i32[N]; captions list[str] of length N.

    Samples of mixed lengths in more than one compiled call (more than a call holds: `batch_size`, or
    fewer where the local devices do not divide it): with `group_lengths` the calls take the samples in
    order of length, and each call runs at its own longest length rounded up to a multiple of
    LENGTH_BUCKET frames (the call's longest T at most), not at T: a call of short samples computes no
    frames of the long ones, for a program per length it needs. `group_lengths=False` runs every call at
    T (one program). None (the default): grouped on a CPU, where a call's time follows the frames it
    computes (256 samples of 40-196 frames, DDIM-50, full-size model on 2 cores: 1.20x faster with the
    extra programs' compiling; RESULTS.md, session 44), not on an accelerator, where a compile costs more
    than the padded frames (H100: DDIM-50 of 32 x 196 in 0.14 s, its program compiled in 8 s). A sample
    is the same either way (its noise is drawn per sample and its padded frames are masked out; float
    rounding of the other program aside).

    Compiling: one program per sampler setting (sampler, steps, eta, spacing, guided or not), samples per
    call and frames per call (T where one call holds every sample or the calls are not grouped; grouped,
    T and the multiples of LENGTH_BUCKET below it that the calls' lengths need). A call that repeats them
    (other captions, seed, guidance scale, or another checkpoint of the same architecture) reuses it:
    0.01-0.03 s for 10 DDIM steps of the demo's model on 2 CPU cores; a new length or sample count
    compiles again, 3-5 s there (4.5 s for the full-size model at 4 x 60 frames). For many captions of
    mixed lengths, give them to one call (a list of lengths) rather than one call each.
    """
    _check_request(
        loaded, captions, num_samples, sampler, steps, eta, spacing, guidance_scale, seed, batch_size
    )
    if group_lengths is not None and not isinstance(group_lengths, (bool, np.bool_)):
        # bool("false") is True: a config's string had grouped the calls it asked not to
        raise SampleError(
            f"group_lengths must be True, False or None (the backend's default), got {group_lengths!r} "
            f"(the config's sample.group_lengths takes {', '.join(GROUP_LENGTHS)}: sampler_settings maps it)"
        )
    lengths_per_caption = _frame_counts(num_frames, len(captions), loaded.max_motion_length)
    captions = list(captions)
    cut = _cut_captions(loaded, captions)
    if cut:  # `run` logs these notes itself; from Python nothing had said that a caption's end was unread
        warnings.warn(
            f"{config_lib.listed(cut, 3, '; ')}: the rest of such a caption is not read (training read its "
            "captions so too)",
            CaptionCutWarning,
            stacklevel=2,
        )
    total = len(captions) * num_samples
    caption_of = np.repeat(np.arange(len(captions)), num_samples)  # sample -> caption, caption-major
    lengths = np.asarray(lengths_per_caption, np.int32)[caption_of]
    frames = int(lengths.max())

    tokens, token_mask = loaded.tokenizer.encode(captions + [""], loaded.text_max_length)
    encoded = np.asarray(_encoder(loaded.model)(loaded.params, tokens, token_mask))  # [C + 1, L, W]

    devices = devices_for(total, batch_size)
    per_device = call_split(total, batch_size, devices)
    chunk = per_device * devices
    guided = float(guidance_scale) != 1.0
    if sampler == "ddpm":
        steps, eta, spacing = 0, 0.0, "leading"  # unused: one compiled DDPM loop whatever they are
    function = _sample_function(
        loaded.model, loaded.prediction, loaded.clip_x0, sampler, int(steps), float(eta), spacing, guided
    )
    params = _replicated(loaded, "params", lambda: loaded.params, devices)
    schedule = _replicated(loaded, "schedule", lambda: loaded.schedule, devices)

    shared = (np.uint32(seed), encoded[-1], token_mask[-1], np.float32(guidance_scale))
    standardized = np.zeros((total, frames, loaded.model.input_feats), np.float32)
    # Traced in partitionable threefry (JAX's default since 0.5, which every sample of this project drew
    # with): there normal(key, [T, D])[:n] == normal(key, [n, D]). A user's jax_threefry_partitionable=False
    # would make a sample's noise change with the longest length beside it (0.1 std on the demo).
    if group_lengths is None:
        group_lengths = jax.default_backend() == "cpu"
    for index, call_frames in call_plan(lengths, chunk, bool(group_lengths)):
        per_sample = (
            index.astype(np.int32),
            np.arange(call_frames)[None] < lengths[index][:, None],  # frame masks [chunk, call_frames]
            encoded[caption_of[index]],
            token_mask[caption_of[index]],
        )
        per_sample = [a.reshape(devices, per_device, *a.shape[1:]) for a in per_sample]
        with _partitionable_threefry():
            x0 = function(params, schedule, shared[0], *per_sample, *shared[1:])
        standardized[index, :call_frames] = np.asarray(x0).reshape(chunk, call_frames, -1)

    valid = np.arange(frames)[None, :] < lengths[:, None]  # [N, T]
    motion = np.where(valid[..., None], pipeline.destandardize(standardized, loaded.mean, loaded.std), 0.0)
    motion = motion.astype(np.float32)
    positions = None
    if joint_parents(loaded) is not None:
        decoded = np.asarray(_decoder(loaded.skeleton, loaded.representation)(motion))
        positions = np.where(valid[..., None, None], decoded, 0.0).astype(np.float32)
    return {
        "motion": motion,
        "positions": positions,
        "lengths": lengths,
        "captions": [captions[c] for c in caption_of],
    }


# ------------------------------------------------------------------------------------------ BVH output
def matrix_to_euler(matrix: np.ndarray, order: str) -> np.ndarray:
    """Rotation matrices [..., 3, 3] -> intrinsic Euler angles in degrees [..., 3] in `order` ('ZXY', ...).

    The inverse of `kinematics.euler_to_matrix` (R = R_{order[0]}(a0) @ R_{order[1]}(a1) @ R_{order[2]}(a2)):
    a1 in [-90, 90], a0 and a2 in (-180, 180]. At gimbal lock (|a1| = 90) a2 is set to 0.

    a1 and a2 are read from the matrix with a0's rotation taken off it, not each from the matrix itself:
    near lock (|a1| within ~0.01 degrees of 90) the entries that fix a0 and a2 alone are cos(a1) times
    their sines and cosines, so a float32 matrix's rounding (1e-7) picks them at random; each was then
    right for a different a0, and their sum (all that the matrix fixes there) was wrong by up to 180
    degrees. Taken off, whatever a0 came out, a1 and a2 make the product the matrix again.
    """
    if order not in kinematics.EULER_ORDERS:
        raise ValueError(
            f"unknown rotation order {order!r}; expected one of {', '.join(kinematics.EULER_ORDERS)}"
        )
    m = np.asarray(matrix, np.float64)
    i, j, k = ("XYZ".index(axis) for axis in order)
    sign = 1.0 if (j - i) % 3 == 1 else -1.0  # +1 for the cyclic orders XYZ, YZX, ZXY
    # |cos a1| from the entries it scales, not sqrt(1 - sin^2): float32 rounds sin(a1) to 1 within 0.014 deg
    cos_middle = np.hypot(m[..., j, k], m[..., k, k])
    locked = cos_middle < 1e-6
    first = np.where(
        locked,
        np.arctan2(sign * m[..., k, j], m[..., j, j]),
        np.arctan2(-sign * m[..., j, k], m[..., k, k]),
    )
    # n = R_{order[0]}(a0)^T m = R_{order[1]}(a1) R_{order[2]}(a2): its column k is R_{order[1]}(a1)'s, its
    # row j R_{order[2]}(a2)'s.
    c, s = np.cos(first), np.sin(first)
    n_kk = c * m[..., k, k] - sign * s * m[..., j, k]
    n_ji = c * m[..., j, i] + sign * s * m[..., k, i]
    n_jj = c * m[..., j, j] + sign * s * m[..., k, j]
    middle = np.arctan2(sign * m[..., i, k], np.maximum(n_kk, 0.0))  # (a float32 rounding below 0: a1 = +-90)
    last = np.arctan2(sign * n_ji, n_jj)
    return np.degrees(np.stack([first, middle, last], axis=-1))


def unwrap_euler(angles: np.ndarray) -> np.ndarray:
    """Euler angles in degrees [T, ..., 3] (three distinct axes) made continuous over the frames (axis 0):
    each frame takes, of the triples naming its rotation -- (a0, a1, a2) and (a0 + 180, 180 - a1,
    a2 + 180), each angle shifted by whole turns -- the one nearest the frame before. The same rotations:
    a tool that interpolates or filters the channels (or reads them as features) sees no 180 or 360
    degree jumps where a rotation passes a1 = +-90 or a0, a2 = +-180 (`matrix_to_euler`'s ranges)."""
    out = np.array(angles, np.float64)
    flip = np.array([180.0, 180.0, 180.0])
    mirror = np.array([1.0, -1.0, 1.0])
    for t in range(1, len(out)):
        before = out[t - 1]
        candidates = []
        for triple in (out[t], out[t] * mirror + flip):
            candidates.append(triple + 360.0 * np.round((before - triple) / 360.0))
        distances = [np.sum((c - before) ** 2, axis=-1, keepdims=True) for c in candidates]
        out[t] = np.where(distances[1] < distances[0], candidates[1], candidates[0])
    return out


def bvh_channels(features: np.ndarray, skeleton: Skeleton, order: str = BVH_ORDER, kind: str = "axis_angle"):
    """Features [T, D] of the rotation layout `kind` (`axis_angle`, `rotation_6d`) -> (Euler degrees [T, R, 3]
    of the rotation joints, continuous over the frames (`unwrap_euler`), root translation [T, 3]) as
    `data.bvh.format_bvh` takes them. The root starts at the origin: the features keep its motion, not its
    place (`ground_offset` gives the shift that stands it on the ground). One sample at a time: `generate`'s
    motion[i, :lengths[i]]."""
    if np.ndim(features) != 2:
        raise ValueError(
            f"bvh_channels: features must be one sample's {kind} features [T, D]; got shape "
            f"{list(np.shape(features))} (for generate's [N, T, D] motion, pass motion[i, :lengths[i]])"
        )
    rotations = np.asarray(representation.local_rotations(features, skeleton, kind))
    rotations = rotations[:, skeleton.rotation_joints]
    translation = np.cumsum(np.asarray(features, np.float64)[:, :3], axis=0)
    return unwrap_euler(matrix_to_euler(rotations, order)), translation


def ground_offset(positions: np.ndarray) -> np.ndarray:
    """The shift [3] that stands a sample on the ground: its lowest joint of the first frame at height 0
    on the Y axis (up in BVH files and in BEAT), nothing across. positions: [T, J, 3]. The positions and
    rotation features keep the root's motion, not its height, so such a decoded sample starts with its
    root at the origin, half under the floor in a tool that shows one. Not for the HumanML3D layout
    (HumanML3D's 263 features, KIT-ML's 251): they hold the root's height, and `run` writes their
    positions as decoded, without this shift."""
    if np.ndim(positions) != 3 or np.shape(positions)[-1] != 3 or not np.shape(positions)[0]:
        raise ValueError(
            f"ground_offset: positions must be one sample's joint positions [T, J, 3]; got shape "
            f"{list(np.shape(positions))} (for generate's [N, T, J, 3] positions, pass "
            "positions[i, :lengths[i]])"
        )
    return np.array([0.0, -float(np.min(positions[0, :, 1])), 0.0])


# ------------------------------------------------------------------------------------ launch.py --mode sample
def _slug(caption: str, width: int = 40) -> str:
    """A file-name piece of `caption`: ASCII words where it has them ('café' -> 'cafe'), else the
    caption's own letters ('日本語', 'नमस्ते'), else 'caption' (emoji, punctuation)."""
    ascii_words = unicodedata.normalize("NFKD", text.normalize(caption)).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_words.lower()).strip("_")
    if not slug:  # letters, marks (the vowel signs of Devanagari, say) and digits of any script
        kept = "".join(c if unicodedata.category(c)[0] in "LMN" else " " for c in caption)
        slug = "_".join(kept.lower().split())
    return slug[:width].rstrip("_") or "caption"


def bvh_problem(loaded: LoadedModel) -> str | None:
    """Why `--mode sample` writes no .bvh files for this checkpoint (None: it writes them)."""
    if loaded.representation == "humanml3d":
        return (
            "the humanml3d representation's joint rotations (6D, from inverse kinematics) come without the "
            "skeleton offsets a BVH file needs"
        )
    if loaded.representation not in representation.ROTATION_REPRESENTATIONS:
        return f"the {loaded.representation} representation has no joint rotations"
    if loaded.skeleton is None:
        return f"the {loaded.representation} data this model trained on have no skeleton (no skeleton.json)"
    try:
        bvh.check_writable(loaded.skeleton)
    except ValueError as error:
        return f"its skeleton cannot be written as BVH ({error})"
    return None


def _partitionable_threefry():
    """JAX's partitionable threefry for what is traced inside (`generate`'s noise draws); a JAX that has
    dropped the option draws that way always."""
    switch = getattr(jax, "threefry_partitionable", None)
    return contextlib.nullcontext() if switch is None else switch(True)


def read_captions(sample_config) -> list[str]:
    """The captions of `sample.text` ('|'-separated) or `sample.text_file` (one per line: a line ends at
    LF, CRLF or CR only; blank lines are skipped).

    Not str.splitlines, which also ends a line at a form feed, a vertical tab, U+0085, U+2028 or U+2029
    (found in text pasted from web pages and word processors): that split one caption into two, and
    shifted the index (the file names and the noise) of every caption after it without a word."""
    given, path = str(sample_config.text), str(sample_config.text_file)
    if given.strip() and path:
        raise SampleError("set one of sample.text and sample.text_file, not both")
    if path:
        try:
            # universal newlines: CRLF and CR become LF; a BOM is not a caption
            lines = Path(path).read_text(encoding="utf-8-sig").split("\n")
        except (OSError, UnicodeDecodeError) as error:
            raise SampleError(f"sample.text_file {path!r} cannot be read ({error})") from None
        captions = [line.strip() for line in lines if line.strip()]
        if not captions:
            raise SampleError(f"sample.text_file {path!r} holds no caption (one per line)")
        return captions
    if not given.replace("|", "").strip():
        raise SampleError(
            "nothing to sample: set sample.text ('caption one|caption two') or sample.text_file (one caption "
            "per line)"
        )
    captions = config_lib.split_captions(given, "sample.text")
    return captions


def check_finite(result: dict[str, Any], loaded: LoadedModel, workdir) -> None:
    """SampleError when `generate`'s motion is not finite within its samples' lengths: the checkpoint's
    parameters have diverged (a run whose loss went to NaN or inf), and nothing of it should be written."""
    bad = [i for i, n in enumerate(result["lengths"]) if not np.isfinite(result["motion"][i, :n]).all()]
    if bad:
        reader = checkpoint.Checkpointer(workdir, read_only=True)
        try:
            steps = reader.all_steps()
        finally:
            reader.close()
        raise SampleError(
            f"the checkpoint of step {loaded.step} in {workdir} generates motion that is not finite "
            f"({len(bad)} of {len(result['lengths'])} samples): its parameters have diverged (did its "
            f"training loss go to NaN or inf?); nothing was written. Checkpoints there: {steps}; choose one "
            "with --config.sample.checkpoint_step"
        )


# ------------------------------------------------------------------------------------ the figures' size
SIZE_FACTOR = 3.0  # a sample's bones summed this many times longer (or 1/this shorter) than the data's
SPEED_FACTOR = 10.0  # a rotation sample's root moving this many times faster (RMS) than the data's


class FigureSizeWarning(ProjectWarning):
    """Sampled figures far larger or smaller than those of the data the checkpoint trained on (or, for
    rotation data, whose root moves far faster): `check_figure_size`."""


def summed_bone_lengths(positions: np.ndarray, parents: Sequence[int]) -> np.ndarray:
    """The sum of every bone's length (float64) of joint positions [..., J, 3] on the tree `parents` [J]
    (-1 for a root) -> [...]: a figure's size that does not depend on its pose."""
    parents = np.asarray(parents)
    children = kinematics.bone_children(parents)
    positions = np.asarray(positions, np.float64)
    bones = positions[..., children, :] - positions[..., parents[children], :]
    return np.linalg.norm(bones, axis=-1).sum(axis=-1)


def size_reference(loaded: LoadedModel) -> tuple[float, str] | None:
    """The summed bone length (`summed_bone_lengths`, the data's unit) a figure of the checkpoint's data
    has, and where it comes from (as a message says it); None where there is nothing to compare with.

    Bone lengths, not a figure's height or extent: they do not change with the pose (a figure lying down
    or crouching is as large as one standing), so a sample of the data's motion has about the reference's
    size whatever it does. From what every checkpoint records, nothing added:
    - `positions` data: the skeleton's rest offsets (`Skeleton.bone_lengths`), the bones themselves;
    - the HumanML3D layout (no skeleton): the bones of the mean pose of the training statistics (root at
      height mean[3], joint j at the mean of its rotation-invariant coordinates). Averaging the positions
      of a swinging limb shortens it (a forearm most), so this is somewhat under the true sum (the same
      construction on the demo's positions data gives 0.85 of its skeleton's); the trunk and legs, most of
      it, move little in the root's facing frame.
    - rotation data (`axis_angle`, `rotation_6d`): None. Forward kinematics gives every sample the skeleton's
      own bones, so its size is right by construction (`check_figure_size` compares the root's speed instead).
    None also where the reference is 0 or not finite (statistics that are not of motion).
    """
    found = humanml3d.layout(loaded.representation, loaded.model.input_feats)
    if found is not None:
        mean = np.asarray(loaded.mean, np.float64)
        root = [[0.0, mean[found.root_height.start], 0.0]]
        pose = np.concatenate([root, mean[found.ric].reshape(found.joints - 1, 3)])
        expected = float(summed_bone_lengths(pose, found.parents))
        source = f"the bones of the mean pose of its training statistics ({found.dataset}'s layout)"
    elif loaded.representation == "positions" and loaded.skeleton is not None:
        expected = float(np.sum(loaded.skeleton.bone_lengths(), dtype=np.float64))
        source = "its skeleton's rest pose"
    else:
        return None
    return (expected, source) if math.isfinite(expected) and expected > 0 else None


def root_step_reference(loaded: LoadedModel) -> float | None:
    """The RMS length of the root's step per frame in the training data of a rotation checkpoint
    (`axis_angle`, `rotation_6d`: their first 3 features are the root's step):
    sqrt(sum over its 3 features of mean^2 + std^2), which is exactly the RMS of |delta| over the training
    frames for the statistics `compute_stats` writes (the std floor, 0.01, adds at most 0.017 units).
    None for other representations (their size is judged by `size_reference`)."""
    if loaded.representation not in representation.ROTATION_REPRESENTATIONS:
        return None
    mean, std = (np.asarray(a, np.float64)[:3] for a in (loaded.mean, loaded.std))
    rms = float(np.sqrt(np.sum(mean**2 + std**2)))
    return rms if math.isfinite(rms) and rms > 0 else None


def check_figure_size(
    result: dict[str, Any], loaded: LoadedModel, names: Sequence[str] | None = None
) -> list[dict[str, Any] | None]:
    """Warn (`FigureSizeWarning`, one for all the samples it names) where `generate`'s figures are
    implausibly sized for the checkpoint's data, and return each sample's size for index.json (None where
    nothing is compared): {measure, value, expected, ratio, unit (None: the data's own), plausible}.
    names: a name per sample for the message (its file), beside its index and caption.

    The measure is a sample's summed bone length per frame, median over its frames (a few wild frames do
    not decide it), against `size_reference`; beyond SIZE_FACTOR (3x) either way it is not a figure of the
    data. 3x is far outside what a model of the data draws (the bones' own spread is a few percent, the
    mean-pose reference 10-20% short; a demo run of 120 steps draws 0.93x) and well inside what goes
    wrong: an undertrained or diverged epsilon-prediction model whose x0 estimates leave the data's range
    (figures of 58-94 m from HumanML3D, ~40x), or statistics of data in another unit (10x, 100x, 1000x).
    The animation scales itself to its figures, so only the arrays show it, and nothing else said so.
    For rotation data (bones fixed by forward kinematics) the RMS root step per frame is compared with
    `root_step_reference`, larger only (a motionless sample is plausible) and beyond SPEED_FACTOR (10x:
    the data's RMS pools all their clips, and a fast clip of a mostly slow dataset can be a few times it).
    """
    count = len(result["lengths"])
    names = names or [None] * count
    reference, speed = size_reference(loaded), root_step_reference(loaded)
    if reference is None and speed is None:  # (a reference of the size comes with decoded positions)
        return [None] * count
    unit = position_unit(loaded.skeleton, loaded.representation, loaded.model.input_feats)
    suffix = f" {unit}" if unit else ""
    sizes, odd, parents = [], [], joint_parents(loaded)
    for i, length in enumerate(result["lengths"]):
        if reference is not None:
            expected, source = reference
            per_frame = summed_bone_lengths(result["positions"][i, :length], parents)
            measured, what = float(np.median(per_frame)), "summed bone length per frame (median over frames)"
            off = not 1 / SIZE_FACTOR <= measured / expected <= SIZE_FACTOR
        else:
            expected, source = speed, "the RMS root step of its training statistics"
            steps = np.asarray(result["motion"][i, :length, :3], np.float64)
            measured, what = float(np.sqrt(np.mean(np.sum(steps**2, axis=-1)))), "RMS root step per frame"
            off = measured / expected > SPEED_FACTOR
        finite = math.isfinite(measured)  # positions overflowing float32 from finite features (index.json
        # is JSON: it holds no NaN or Infinity)
        sizes.append(
            {
                "measure": what,
                "value": measured if finite else None,
                "expected": expected,
                "ratio": measured / expected if finite else None,
                "unit": unit,
                "plausible": finite and not off,
            }
        )
        if off or not finite:
            shown = f"{result['captions'][i][:40]!r}" + (f", {names[i]}" if names[i] else "")
            size = f"{measured:.3g}{suffix}, {measured / expected:.3g}x" if finite else "not finite"
            odd.append(f"sample {i} ({shown}): {size}")
    if odd:
        kind = "sized" if reference is not None else "fast"
        listed = config_lib.listed(odd, 5, "; ")
        data_unit = " (in the data's unit)"
        expected_text = f"{expected:.3g}{suffix or data_unit}"
        warnings.warn(
            f"{len(odd)} of {count} samples of the checkpoint of step {loaded.step} are implausibly {kind} "
            f"for the data it trained on ({what}): {listed}; expected about {expected_text} ({source}). "
            "This usually means an undertrained or diverged model (an epsilon-prediction run early in "
            "training can give estimates far outside the data's range), or a checkpoint of other data than "
            "its statistics describe; the animation scales itself to its figures and does not show it. "
            "Sample from a later checkpoint (--config.sample.checkpoint_step) or train longer",
            FigureSizeWarning,
            stacklevel=2,
        )
    return sizes


CLAIM = ".sampling"  # in a sample folder from when a process takes it until its index.json is written


def fresh_output_dir(wanted: Path) -> tuple[Path, Path | None]:
    """The folder to write samples to: `wanted` if it is missing or empty, else the first missing or empty
    sibling `<name>_2`, `_3`, ... (`.` and `..` are first made absolute: they have no name to number),
    claimed by a `CLAIM` file made in it exclusively, so that a process starting beside this one (which
    sees the folder as in use) takes another; `release_output_dir` removes the claim. Returns (folder, the
    outermost folder this call made, or None)."""
    wanted = Path(os.path.abspath(wanted))
    top = None  # the outermost missing folder above wanted, which the mkdir below makes
    for folder in wanted.parents:
        if folder.exists():
            break
        top = folder
    wanted.parent.mkdir(parents=True, exist_ok=True)  # outside the retries: a dangling link fails here
    candidate, number = wanted, 1
    while True:
        made = False
        try:
            candidate.mkdir()
            made = True
        except FileExistsError:
            pass
        if candidate.is_dir() and (made or not any(candidate.iterdir())):
            try:
                with (candidate / CLAIM).open("x") as claim:
                    claim.write(f"pid {os.getpid()} on {files_lib.host_id()}\n")
                return candidate, (top or (candidate if made else None))
            except FileExistsError:  # claimed by another process between the two steps
                pass
        number += 1
        candidate = wanted.with_name(f"{wanted.name}_{number}")


def release_output_dir(out: Path, made: Path | None, failed: bool) -> None:
    """Remove `out`'s claim; where sampling `failed`, also the folders this call made (`made` and those in
    it down to `out`) while they are empty. Never raises: a sampler's own error is what a user needs."""
    try:
        (out / CLAIM).unlink(missing_ok=True)
        folder = out
        while failed and made is not None and folder.is_relative_to(made) and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    except OSError:
        pass


def _output_folder(wanted: Path) -> tuple[Path, Path | None]:
    """fresh_output_dir(wanted), or a SampleError naming sample.output_dir where it cannot be made or
    written to (a read-only workdir, a colleague's copy, a file in the path)."""
    try:
        out, made = fresh_output_dir(wanted)
        if not os.access(out, os.W_OK | os.X_OK):
            release_output_dir(out, made, failed=True)
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(out))
    except OSError as error:
        raise SampleError(
            f"{error.filename or wanted}: cannot write the samples there ({error.strerror}); set "
            "--config.sample.output_dir to a writable folder"
        ) from None
    return out, made


def _unfinished(folder: Path) -> str:
    """' (...)' where `folder` holds the claim of a sampling process on this host that is gone (killed
    before it finished: its files are incomplete), else ''."""
    try:
        words = (folder / CLAIM).read_text().split()
        pid, host = int(words[1]), words[3]
    except (OSError, ValueError, IndexError):
        return ""
    if host != files_lib.host_id() or not files_lib.process_is_gone(pid):  # another host's, or running
        return ""
    return f" (the unfinished files of a sampling killed before it finished, pid {pid}: delete them)"


def panel_titles(captions: Sequence[str], num_samples: int) -> list[str]:
    """The animation's panel titles: each caption, and with several samples per caption (caption-major,
    as `generate` returns them) its draw first, as the file names count it: 'draw 0 of 3: wave' (first:
    a title too long for its panel is cut at its end)."""
    if num_samples <= 1:
        return list(captions)
    return [f"draw {i % num_samples} of {num_samples}: {caption}" for i, caption in enumerate(captions)]


def _save_npy(path: Path, array: np.ndarray, written: list[Path]) -> None:
    """np.save into a new file `path` (never replacing one), added to `written` once it is there. Written
    under a staging name and linked into place, so that `path` never holds part of the array, even after
    a kill."""
    with files_lib.staged_file(path) as temporary, files_lib.writing(path, temporary):
        with open(temporary, "xb") as handle:
            np.save(handle, array)
        files_lib.link_new(temporary, path)
        written.append(path)


def _cut_captions(loaded: LoadedModel, captions: Sequence[str]) -> list[str]:
    """A note per caption whose tokens do not fit model.text_max_length (the model reads its first
    tokens only, as training did)."""
    room = loaded.text_max_length - 2  # bos and eos
    notes = []
    for index, count in loaded.tokenizer.overlong(captions, loaded.text_max_length):
        caption = captions[index]
        spelled = loaded.tokenizer.byte_fallback and loaded.tokenizer.unseen_words(caption)
        notes.append(
            f"caption {index} ({shown_caption(caption)}) takes {count} tokens; the model reads its first "
            f"{room} (model.text_max_length {loaded.text_max_length} less bos and eos)"
            + ("; each word the vocabulary lacks takes 1 + its UTF-8 bytes" if spelled else "")
        )
    return notes


def shown_caption(caption: str) -> str:
    """A caption as notes quote it: its first 40 characters, and '...' where it goes on."""
    return f"{caption[:40]!r}{'...' if len(caption) > 40 else ''}"


def _unseen_note(loaded: LoadedModel) -> str:
    """How the model reads words its vocabulary lacks, and whether its training prepared it for them."""
    if not loaded.tokenizer.byte_fallback:
        return "the model reads each as <unk>"
    spelled = loaded.config.data.get("spell_prob")  # None: a run from before data.spell_prob
    # A run fine-tuned from another's weights reads with the source's vocabulary: every word of its own
    # captions that the source never saw was spelled so too, each time.
    fine_tuned = isinstance((getattr(loaded, "metadata", None) or {}).get("init_from"), dict)
    own = "every word of its fine-tuning captions that the vocabulary of the run it started from lacks"
    if spelled:
        also = f" (and {own})" if fine_tuned else ""
        return (
            f"the model reads them spelled in bytes, as training gave it {spelled:.0%} of its caption "
            f"words{also}"
        )
    if fine_tuned:
        return f"the model reads them spelled in bytes, as training gave it {own}"
    return "the model reads them spelled in bytes, which its training never showed it (data.spell_prob 0)"


def rate_note(loaded: LoadedModel) -> str | None:
    """A warning where the run read HumanML3D-layout features (263 or 251 a frame) at another frame rate
    than that layout's data (training warned of it; a run folder's sampler may never have seen that log):
    the files record the run's rate, so the animation plays at the ratio of the two."""
    other = humanml3d.other_rate(loaded.representation, np.asarray(loaded.mean).size, loaded.fps)
    if other is None:
        return None
    found, speed = other
    return (
        f"warning: this run read its data at data.fps={float(loaded.fps):g}, but its {found.dataset}-layout "
        f"features are {found.fps:g} fps motion: the animation and index.json's rate play them {speed}, "
        "unless the clips were resampled to the run's rate"
    )


def short_length_note(loaded: LoadedModel, num_frames: int) -> str | None:
    """A note where sample.num_frames is below the shortest clip the run trained on
    (data.min_motion_length: HumanML3D's 40 frames): training left such clips out and windows longer ones
    at data.max_motion_length, so the model never drew motion this short. A run whose max_motion_length is
    below its min_motion_length trained on windows of max_motion_length frames: that is its shortest."""
    data = loaded.config.data
    shortest = int(data.get("min_motion_length", 1) or 1)
    window = int(data.get("max_motion_length", shortest) or shortest)
    if int(num_frames) >= min(shortest, window):
        return None
    what = (
        f"data.min_motion_length={shortest} frames"
        if shortest <= window
        else f"its windows of data.max_motion_length={window} frames"
    )
    return (
        f"note: sample.num_frames={int(num_frames)} is below the shortest clip the run trained on "
        f"({what}): the model never drew motion this short"
    )


_CAPTION_LINE = re.compile(r"[^#]*#[^#]*#\s*[0-9.eE+-]*\s*#\s*[0-9.eE+-]*\s*")  # caption#tokens#from#to


def caption_line_note(captions: Sequence[str]) -> str | None:
    """A note where captions are whole lines of a HumanML3D-layout caption file (`texts/<id>.txt`:
    `caption#tokens#from#to`), as when that file is given as sample.text_file: the model is asked for the
    whole line, part-of-speech tags and seconds included, where training read the caption before the
    first '#'; None where no caption has that form."""
    lines = [i for i, caption in enumerate(captions) if _CAPTION_LINE.fullmatch(caption)]
    if not lines:
        return None
    first = captions[lines[0]]
    return (
        f"note: {len(lines)} of the {len(captions)} captions read as lines of a HumanML3D caption file "
        f"('caption#tokens#from#to'), e.g. number {lines[0] + 1}, {first!r:.80}: each is sampled whole, "
        f"tags and seconds included; the run trained on the part before the first '#' "
        f"({first.split('#', 1)[0].strip()!r:.60}): give the captions alone"
    )


def run(config, workdir: str | os.PathLike, log=print) -> dict[str, Any]:
    """`launch.py --mode sample`: sample `config.sample.*` from the checkpoint in `workdir`, write files.

    Everything but `config.sample` comes from the checkpoint. Writes under sample.output_dir (default
    <workdir>/samples/step_<step>; a folder that already holds files is left alone for a fresh sibling):
    per sample `<caption index>_<slug>_<draw>.npy` (features [T_i, D]), `..._positions.npy` ([T_i, J, 3]),
    `.bvh` for rotation data (axis_angle, rotation_6d) when sample.write_bvh, `index.json` (per sample its
    caption, length, files and, where judged, its "size" against the data's: `check_figure_size`, which warns
    of figures implausibly sized), and `samples.gif` (`.mp4`: sample.render_format) when sample.render.
    Returns {"output_dir", "files", "step", "num_samples"}.
    """
    s = config.sample
    captions = read_captions(s)
    step = None if int(s.checkpoint_step) < 0 else int(s.checkpoint_step)
    loaded = load_model(workdir, step, use_ema=bool(s.use_ema))
    _frame_counts(s.num_frames, len(captions), loaded.max_motion_length)  # refused before any line of it
    asked = sampler_settings(s)
    check_settings(loaded, asked)  # (sample.steps beyond the checkpoint's diffusion, ...)
    settings = {
        **settings_used(asked, loaded, bool(s.use_ema)),
        "num_samples": int(s.num_samples),
        "representation": loaded.representation,
        "fps": loaded.fps,
    }
    log(
        f"sampling {len(captions)} caption(s) x {s.num_samples} from {checkpoint.checkpoint_dir(workdir)}/"
        f"{loaded.step} ({settings_text(settings)}) "
        f"on {devices_for(len(captions) * s.num_samples, s.batch_size)} {jax.default_backend()} device(s)"
    )
    for note in (
        spacing_note(loaded, asked),
        unread_settings_note(asked, loaded),
        rate_note(loaded),
        short_length_note(loaded, s.num_frames),
        caption_line_note(captions),
    ):
        if note:
            log(note)
    unseen = [word for caption in captions for word in loaded.tokenizer.unseen_words(caption)]
    if unseen:
        started = loaded.metadata.get("init_from")
        whose = (
            f"words the vocabulary lacks (that of {started.get('workdir')}, the run this one started from, "
            "train.init_from)"
            if isinstance(started, dict)
            else "words no training caption held"
        )
        log(f"{whose}: {', '.join(dict.fromkeys(unseen))}; {_unseen_note(loaded)}")
    for note in _cut_captions(loaded, captions):
        log(note)
    wanted = Path(os.path.abspath(s.output_dir or Path(workdir) / "samples" / f"step_{loaded.step}"))
    # Made before sampling, so that a folder that cannot be written fails in a second, not after the
    # sampler; removed again (if this call made it) when sampling fails.
    out, made = _output_folder(wanted)
    failed, written = True, []
    try:
        summary = _sample_into(out, wanted, loaded, captions, settings, workdir, s, log, written)
        failed = False
        return summary
    finally:
        if failed:  # an error, a full disk, Ctrl-C or SIGTERM: no partial sample stays behind
            for path in written:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
        release_output_dir(out, made, failed)


def _sample_into(
    out: Path, wanted: Path, loaded, captions, settings, workdir, s, log, written: list[Path]
) -> dict[str, Any]:
    """`run`'s sampling and writing into the claimed folder `out`; `written` gets each file's path before
    the file is written (`run` removes them where this fails)."""
    problem = bvh_problem(loaded) if s.write_bvh else None
    if problem:  # said before the sampler runs; the other files are written all the same
        log(f"no .bvh files: {problem}")
    write_bvh = bool(s.write_bvh) and problem is None
    with warnings.catch_warnings():  # (run logged each cut caption before sampling)
        warnings.simplefilter("ignore", CaptionCutWarning)
        result = generate(loaded, captions, s.num_frames, num_samples=s.num_samples, **sampler_settings(s))
    check_finite(result, loaded, workdir)
    stems = [
        f"{i // int(s.num_samples):03d}_{_slug(caption)}_{i % int(s.num_samples)}"
        for i, caption in enumerate(result["captions"])
    ]
    sizes = check_figure_size(result, loaded, [f"{stem}.npy" for stem in stems])
    if out != wanted:  # both absolute: a relative workdir said "holds files" of its own empty folder
        held = "is a file" if wanted.is_file() else f"already holds files{_unfinished(wanted)}"
        log(f"{wanted} {held}; writing to {out} instead")
    files, entries = [], {}
    for i, (caption, length) in enumerate(zip(result["captions"], result["lengths"], strict=True)):
        caption_index, draw = divmod(i, int(s.num_samples))
        stem = stems[i]
        entry = {"caption": caption, "length": int(length), "caption_index": caption_index, "sample": draw}
        if sizes[i] is not None:  # what check_figure_size measured: the figure's size against the data's
            entry["size"] = sizes[i]
        _save_npy(out / f"{stem}.npy", result["motion"][i, :length], written)
        names = {"motion": f"{stem}.npy"}
        lift = np.zeros(3)
        if result["positions"] is not None:
            if loaded.representation != "humanml3d":  # (its features hold the root's height: kept)
                lift = ground_offset(result["positions"][i, :length])
            _save_npy(
                out / f"{stem}_positions.npy",
                (result["positions"][i, :length] + lift).astype(np.float32),
                written,
            )
            names["positions"] = f"{stem}_positions.npy"
        if write_bvh:
            euler, translation = bvh_channels(
                result["motion"][i, :length], loaded.skeleton, kind=loaded.representation
            )
            bvh.write_bvh(  # exclusively; a failed write removes its own file
                out / f"{stem}.bvh", loaded.skeleton, euler, translation + lift, 1.0 / loaded.fps, BVH_ORDER
            )
            written.append(out / f"{stem}.bvh")
            names["bvh"] = f"{stem}.bvh"
        entries[names["motion"]] = {**entry, "files": names}
        files += names.values()
    if s.render:
        if result["positions"] is None:
            log("no animation: the checkpoint's data have no skeleton to draw")
        else:
            render = importlib.import_module("motion_ddpm_jax.render")
            positions = [p[:n] for p, n in zip(result["positions"], result["lengths"], strict=True)]
            try:  # the arrays are what was asked for: a picture that fails costs only itself
                path = render.animate_skeletons(
                    positions,
                    joint_parents(loaded),
                    out / f"samples.{s.render_format}",
                    fps=loaded.fps,
                    titles=panel_titles(result["captions"], int(s.num_samples)),
                    log=log,  # (title characters no installed font has: one line)
                    mirrored=humanml3d.is_mirrored(loaded.representation, loaded.model.input_feats),
                    camera=str(s.get("camera", "auto")),
                )
                files.append(Path(path).name)
                written.append(Path(path))
            except (UserError, OSError, ValueError) as error:
                log(f"no animation: {error}")
            except MemoryError:  # a GIF holds every frame of all panels in memory until it is written
                log(
                    f"no animation: out of memory drawing {len(positions)} samples of up to "
                    f"{max(len(p) for p in positions)} frames in one animation (a GIF keeps every frame "
                    "of all panels until it is written); sample fewer at a time, or set "
                    "sample.render=false (the arrays are written)"
                )
    index = {
        "settings": settings,
        "software": provenance.software(jax.local_devices()[0]),  # what drew these samples
        "samples": entries,
    }
    with (
        files_lib.staged_file(out / "index.json") as temporary,
        files_lib.writing(out / "index.json", temporary),
    ):
        temporary.write_text(json.dumps(index, indent=1), encoding="utf-8")
        files_lib.link_new(temporary, out / "index.json")  # whole or not at all, and never over a file
    written.clear()  # complete: nothing of it is removed from here on
    files.append("index.json")
    count = len(result["captions"])
    log(f"wrote {count} sample{'s' if count != 1 else ''} to {out}")
    return {
        "output_dir": str(out),
        "files": files,
        "step": loaded.step,
        "num_samples": len(result["captions"]),
    }
