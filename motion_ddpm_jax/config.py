"""The base configuration every file in `configs/` starts from: one ConfigDict, every number in it.

Sections: `data`, `diffusion`, `loss`, `optim`, `model`, `train`, `sample`, `eval`, `distributed`. The
defaults are the original PyTorch trainer's where it had one: 1000 linear-schedule steps, epsilon
prediction, velocity 0.1, acceleration 0.05, geometric 0.01, lr 1e-4 with warmup 0.1 -> 1 over 500 steps (or
an epoch, if shorter) then cosine to 1e-6, clipping 0.5, batch 32, EMA 0.9999. Where they differ from it,
on purpose:
- the geometric (bone-length) term is on (the original had to disable its own), and under epsilon
  prediction the velocity, acceleration and geometric terms of each example are weighted by
  min(SNR(t), 1) (`loss.aux_weighting`; about a third of their nominal weight on average over t);
- the EMA is optax's, debiased (the decay-weighted mean of the parameters so far), not one started from
  the initial weights;
- mixed precision is bfloat16 compute with float32 parameters and losses (on a GPU; float32 on a CPU),
  not float16 autocast with a loss scaler;
- captions are read by a word tokenizer learned from the training captions (`data.spell_prob` of words
  trained spelled in bytes, for words it never saw), dropped for `model.cond_drop_prob` (10%) of
  training samples for classifier-free guidance;
- `--mode sample` defaults to DDIM with 50 steps (`sample.sampler=ddpm` for all diffusion steps).
"""

import difflib
import math
import re

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    # Path fields (data.raw_root, data.root, sample.text_file, sample.output_dir, eval.output,
    # eval.autoencoder_dir, train.init_from) are relative to the current directory; a leading ~ is the
    # home folder (launch.py's PATH_FIELDS: a new path field belongs there too).
    config.data.source = "beat"  # beat (raw BEAT under raw_root) | synthetic (the demo set) | prepared
    config.data.raw_root = ""  # raw recordings: BEAT's release, or any skeleton's BVH + TextGrid pairs
    config.data.root = ""  # the prepared dataset (a cache written by --mode prepare), or a HumanML3D folder
    config.data.representation = "positions"  # positions | rotation_6d | axis_angle | humanml3d
    config.data.fps = 60.0
    config.data.max_motion_length = 360  # training window (frames); also the positional table's size
    config.data.min_motion_length = 1  # clips shorter than this are left out of training
    config.data.max_clip_length = (
        0  # HumanML3D layout: clips of this many frames or more are dropped; 0 = keep
    )
    config.data.min_pause_s = 0.5  # sentence clips are cut at silences at least this long
    config.data.min_clip_s = 0.5  # shorter sentence clips are dropped (and counted)
    config.data.pause_labels = ""  # TextGrid labels that are pauses besides blank ones: "sil,sp" (any case)
    config.data.textgrid_tier = ""  # the words' TextGrid tier; "" = the IntervalTier 'words', else the first
    config.data.up_axis = "y"  # the recordings' up axis (y | z | x); prepare turns z or x to Y up
    # The joint order prepare reads recordings in: a skeleton.json (a prepared dataset's, or its data.root
    # folder), e.g. to fine-tune on data whose exporter lists sibling joints otherwise; "" = the first's
    config.data.joint_order = ""
    config.data.val_fraction = 0.1  # of the recordings
    config.data.test_fraction = 0.1
    config.data.split_seed = 0
    config.data.std_floor = 1e-2
    # Per word of a training caption: the chance it is given spelled in bytes, as a word the vocabulary
    # lacks is at sampling, so that the byte fallback is trained (at 0 those embeddings stay as initialised).
    config.data.spell_prob = 0.05

    config.diffusion = ml_collections.ConfigDict()
    config.diffusion.steps = 1000
    config.diffusion.schedule = "linear"  # linear (needs steps > 20) | cosine
    config.diffusion.prediction = "epsilon"  # epsilon | x0 | v
    config.diffusion.clip_x0 = 0.0  # 0 = no clipping of the x0 estimate while sampling

    config.loss = ml_collections.ConfigDict()
    config.loss.use_velocity_loss = True
    config.loss.velocity_weight = 0.1
    config.loss.use_acceleration_loss = True
    config.loss.acceleration_weight = 0.05
    config.loss.use_geometric_loss = True
    config.loss.geometric_weight = 0.01
    # Per-example weights of the x0-space terms: auto | none | truncated_snr (see losses.auxiliary_weights).
    config.loss.aux_weighting = "auto"

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 1e-4
    config.optim.min_lr = 1e-6  # the cosine reaches it at step num_steps, just after the last update
    # linear from 0.1 * lr to lr; -1 = min(500, steps per epoch). A run of no more steps than its warmup
    # (-1's, or one counted in epochs; validate refuses warmup_steps >= num_steps) warms up over its steps
    # less one instead: its last update is at lr, with no cosine (train.py)
    config.optim.warmup_steps = -1
    config.optim.warmup_start_factor = 0.1
    config.optim.clip_norm = 0.5  # global gradient norm
    config.optim.weight_decay = 0.0  # AdamW's decay of kernels/embeddings (0 = Adam, as MotionDiffuse)
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.eps = 1e-8
    config.optim.ema_decay = 0.9999
    config.optim.ema_every = 1

    config.model = ml_collections.ConfigDict()  # MotionDiffuse's sizes; see model.py
    config.model.input_feats = 0  # 0 = the data's feature count (264 for BEAT positions)
    config.model.latent_dim = 512
    config.model.num_layers = 8
    config.model.ff_size = 1024
    config.model.num_heads = 8
    config.model.dropout = 0.0
    config.model.text_vocab_size = 0  # 0 = the tokenizer's vocabulary size
    config.model.text_max_length = 77
    config.model.text_latent_dim = 256
    config.model.text_num_layers = 4
    config.model.text_num_heads = 4
    config.model.text_ff_size = 2048
    config.model.attention = "efficient"  # efficient (MotionDiffuse's linear attention) | softmax
    config.model.compute_dtype = "auto"  # auto (bfloat16 on GPU/TPU, float32 on CPU) | bfloat16 | float32
    config.model.remat = False  # recompute each layer in the backward pass (memory for long sequences)
    # xla | pallas: on a CUDA GPU, the stylization and the linear attention's read and context as Pallas
    # kernels (motion_ddpm_jax/kernels.py; the same function, fewer bytes: benchmarks/RESULTS.md); as
    # xla elsewhere
    config.model.kernels = "xla"
    config.model.cond_drop_prob = 0.1  # per-sample caption dropout for classifier-free guidance

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 32  # global, over all devices and hosts
    config.train.num_epochs = 100
    config.train.num_steps = 0  # > 0 overrides num_epochs
    config.train.log_every = 50
    # a checkpoint at every multiple of either (both may be set) and at the last step; 0 = off
    config.train.save_every_steps = 0
    config.train.save_every_epochs = 10
    config.train.max_to_keep = 3  # keep the newest this many checkpoints (>= 1): older ones are deleted
    config.train.max_consecutive_nonfinite = 20  # stop when this many steps in a row had non-finite gradients
    config.train.sample_every = 0  # every this many steps render a few samples to <workdir>/progress; 0 off
    config.train.sample_captions = ""  # '|'-separated captions for those; empty = the first few of val
    # Fine-tuning: a new run starts from the weights of another run's checkpoint: that run's workdir (its
    # latest checkpoint) or <workdir>/checkpoints/<step>. It takes that run's normalisation statistics and
    # tokenizer too (the space its weights read and write); the model must have the same shapes. Read at a
    # run's first start only: a resume goes on from the run's own checkpoints. Optimizer and EMA start anew.
    config.train.init_from = ""
    config.train.init_weights = "ema"  # ema | params: which of that checkpoint's parameters to start from

    config.sample = ml_collections.ConfigDict()  # launch.py --mode sample (and the defaults of --mode eval)
    config.sample.text = ""  # captions separated by '|'
    config.sample.text_file = ""  # or a file with one caption per line (blank lines skipped)
    config.sample.num_frames = 60  # per caption, at most data.max_motion_length
    config.sample.num_samples = 1  # per caption
    # ddpm (ancestral, all diffusion.steps) | ddim | dpmpp_2m (DPM-Solver++(2M): second order, deterministic)
    config.sample.sampler = "ddim"
    config.sample.steps = 50  # DDIM / DPM-Solver++ steps (ddpm always takes diffusion.steps)
    config.sample.eta = 0.0  # DDIM: 0 deterministic, 1 = DDPM's noise level (dpmpp_2m takes 0 only)
    # the steps of ddim and dpmpp_2m: leading = the DDIM paper's (and MDM's) 0, k, 2k, ...; trailing =
    # ..., T-1-k, T-1, which starts from pure noise however few the steps (leading's first step is T - k)
    config.sample.ddim_spacing = "leading"
    config.sample.guidance_scale = 1.0  # classifier-free guidance; 1 = off
    config.sample.use_ema = True  # sample with the EMA parameters (False: the raw ones)
    config.sample.seed = 0
    config.sample.checkpoint_step = -1  # -1 = the latest checkpoint
    config.sample.batch_size = 64  # samples per compiled sampler call (over all local devices)
    # more samples than one call holds (--mode eval's clips, say): auto = calls of samples of like length,
    # each at its own longest length, on a CPU, one length for all calls elsewhere | true | false
    # (sampling.generate's group_lengths; a sample is the same either way)
    config.sample.group_lengths = "auto"
    config.sample.output_dir = ""  # default <workdir>/samples/step_<checkpoint step>
    config.sample.render = True  # write an animation of the samples, samples.<render_format>
    # gif | mp4 (mp4 needs ffmpeg: on the PATH, or the bundled one of `pip install imageio-ffmpeg`)
    config.sample.render_format = "gif"
    # the animation's camera: auto = one cube of the world, or following each figure where a sample travels
    # so far that the cube would draw it at 2/3 of its size or less; fixed; follow (render.animate_skeletons)
    config.sample.camera = "auto"
    config.sample.write_bvh = True  # write .bvh files where the representation has rotations

    config.eval = ml_collections.ConfigDict()  # launch.py --mode eval: generated vs real motion
    config.eval.split = "val"
    config.eval.num_clips = 256  # real clips (and as many generated) compared; 0 = the whole split
    config.eval.output = ""  # default <workdir>/eval/metrics_step<step>.json
    config.eval.autoencoder_dir = ""  # the FGD motion autoencoder; default <data.root>/fgd_autoencoder
    config.eval.autoencoder_steps = 3000  # --mode train_autoencoder
    config.eval.autoencoder_latent = 32
    # samplings of the generated set, repeat k with seed sample.seed + k: the generated column's mean and
    # 95% confidence interval (Student's t) over them; 1 = one sampling
    config.eval.repeats = 1

    config.distributed = ml_collections.ConfigDict()  # several hosts: jax.distributed.initialize
    config.distributed.enabled = "auto"  # auto (when the environment names a coordinator) | true | false
    config.distributed.coordinator_address = ""  # host:port of process 0; empty = from the environment
    config.distributed.num_processes = 0  # 0 = from the environment
    config.distributed.process_id = -1  # -1 = from the environment
    config.distributed.local_device_ids = ""  # e.g. "0,1"; empty = all local devices
    config.distributed.initialization_timeout_s = 300
    return config


# Fields with a fixed set of values, and numeric fields with their lower bounds (inclusive): checked by
# `validate` before any work starts, so a typo on the command line fails in a second, naming the field.
CHOICES = {
    "data.source": ("beat", "synthetic", "prepared"),
    "data.representation": ("positions", "axis_angle", "rotation_6d", "humanml3d"),
    "data.up_axis": ("y", "z", "x"),
    "diffusion.schedule": ("linear", "cosine"),
    "diffusion.prediction": ("epsilon", "x0", "v"),
    "loss.aux_weighting": ("auto", "none", "truncated_snr"),
    "model.attention": ("efficient", "softmax"),
    "model.compute_dtype": ("auto", "bfloat16", "float32"),
    "model.kernels": ("xla", "pallas"),
    "train.init_weights": ("ema", "params"),
    "sample.sampler": ("ddpm", "ddim", "dpmpp_2m"),
    "sample.ddim_spacing": ("leading", "trailing"),
    "sample.render_format": ("gif", "mp4"),
    "sample.camera": ("auto", "fixed", "follow"),
    "sample.group_lengths": ("auto", "true", "false"),
    "eval.split": ("train", "val", "test"),
    "distributed.enabled": ("auto", "true", "false"),
}
MINIMUM = {
    "data.fps": 1e-6,
    "data.max_motion_length": 1,
    "diffusion.steps": 2,
    "optim.lr": 0.0,
    "optim.min_lr": 0.0,
    "optim.weight_decay": 0.0,
    "optim.clip_norm": 1e-12,
    "optim.ema_every": 1,
    "model.num_layers": 1,
    "model.latent_dim": 1,
    "model.num_heads": 1,
    "model.ff_size": 1,
    "model.text_latent_dim": 1,
    "model.text_ff_size": 1,
    "model.text_num_layers": 1,
    "model.text_num_heads": 1,
    "model.text_max_length": 3,  # bos, eos and at least one token of the caption
    "loss.velocity_weight": 0.0,
    "loss.acceleration_weight": 0.0,
    "loss.geometric_weight": 0.0,
    "optim.warmup_steps": -1,  # -1 = min(500, steps per epoch)
    "train.num_steps": 0,  # 0 = train.num_epochs
    "train.num_epochs": 0,
    "train.save_every_steps": 0,  # 0 = off
    "train.sample_every": 0,  # 0 = off
    "data.split_seed": 0,
    "eval.autoencoder_latent": 1,
    "train.batch_size": 1,
    "train.log_every": 1,
    "train.max_to_keep": 1,
    "sample.num_frames": 1,
    "sample.num_samples": 1,
    "sample.steps": 1,
    "sample.eta": 0.0,
    "sample.guidance_scale": 0.0,
    "sample.batch_size": 1,
    "sample.checkpoint_step": -1,  # -1 = the latest
    "sample.seed": 0,
    "seed": 0,
    "train.save_every_epochs": 0,  # 0 = off
    "train.max_consecutive_nonfinite": 1,  # 0 stopped a run at its first log, blaming 0 bad steps
    "data.std_floor": 0.0,
    "data.min_motion_length": 1,
    "data.max_clip_length": 0,  # 0 = keep every clip
    "data.min_pause_s": 0.0,
    "data.min_clip_s": 0.0,
    "diffusion.clip_x0": 0.0,  # 0 = off
    "model.input_feats": 0,  # 0 = the data's
    "model.text_vocab_size": 0,  # 0 = the tokenizer's
    "eval.num_clips": 0,  # 0 = the whole split
    "eval.autoencoder_steps": 1,
    "eval.repeats": 1,
    "distributed.num_processes": 0,  # 0 = from the environment
    "distributed.process_id": -1,  # -1 = from the environment
    "distributed.initialization_timeout_s": 1,
}
RANGES = {  # both bounds inclusive
    "model.cond_drop_prob": (0.0, 1.0),
    "sample.eta": (0.0, 1.0),
    "data.spell_prob": (0.0, 1.0),
    # the warmup rises from this fraction of optim.lr to optim.lr (-2 had trained at lr -0.002: ascent)
    "optim.warmup_start_factor": (0.0, 1.0),
    "data.val_fraction": (0.0, 1.0),
    "data.test_fraction": (0.0, 1.0),
}
# Numeric fields in [low, high): optim.ema_decay = 1 would never move the average, and its debiasing
# divides by 1 - decay ** count = 0 (NaN parameters, which sampling reads by default).
BELOW = {
    "optim.ema_decay": (0.0, 1.0),
    "optim.b1": (0.0, 1.0),  # Adam's moment decays: 1 would divide by 1 - b ** count = 0 (NaN parameters)
    "optim.b2": (0.0, 1.0),
    "model.dropout": (0.0, 1.0),
    # JAX keys take the low 32 bits of a seed where 64-bit numbers are off (the default): seed 2**32 drew
    # seed 0's initial parameters, noise and caption dropout, silently; sampling's keys fold a uint32 seed.
    "seed": (0, 2**32),
    "sample.seed": (0, 2**32),
}
# Numeric fields > their bound: Adam's eps = 0 divides 0 by 0 where a gradient is 0.
ABOVE = {"optim.eps": 0.0}


def small_model(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with the demo's small model and its training (configs/demo.py; `configs/humanml3d.py:small`,
    `configs/kit.py:small`): a 128-wide, 3-layer motion transformer with a 1-layer text encoder, 100
    diffusion steps of x0 prediction, lr 1e-3 and EMA 0.999 for 2000 steps of 32 clips, a checkpoint and
    progress GIFs every 500. Small enough to check a dataset and the whole pipeline on a CPU in minutes;
    x0 rather than epsilon prediction, as a 128-wide latent cannot carry the noise of hundreds of features
    (epsilon's loss stalls and its samples diverge; train.run warns of it). Returns `config`, changed."""
    config.model.update(
        latent_dim=128, num_layers=3, ff_size=256, num_heads=4,
        text_latent_dim=64, text_num_layers=1, text_num_heads=2, text_ff_size=128,
    )  # fmt: skip
    config.diffusion.steps = 100
    config.diffusion.prediction = "x0"
    config.optim.lr = 1e-3
    config.optim.ema_decay = 0.999
    config.train.update(
        batch_size=32,
        num_steps=2000,
        log_every=100,
        save_every_steps=500,
        save_every_epochs=0,
        sample_every=500,
    )
    return config


def sized(config: ml_collections.ConfigDict, size: str, where: str) -> ml_collections.ConfigDict:
    """A config file's `get_config(size)`: `config` as the file gives it for "" (`--config FILE`), with
    `small_model` for "small" (`--config FILE:small`); ValueError naming `where` (the file) otherwise."""
    if size == "small":
        return small_model(config)
    if size:
        raise ValueError(f"{where} takes ':small' (the demo's small model) or nothing, not ':{size}'")
    return config


def with_defaults(saved: dict) -> dict:
    """A saved run's config (a checkpoint's or run record's dict) with every field it lacks at its default
    (`base_config`): such a field was added to the config after that run started, and its default keeps
    the behaviour of before (`model.kernels`, say, is read as "xla" by `model.model_from_config` too)."""

    def merge(defaults: dict, values: dict) -> dict:
        out = dict(defaults)
        for key, value in values.items():
            both = isinstance(value, dict) and isinstance(defaults.get(key), dict)
            out[key] = merge(defaults[key], value) if both else value
        return out

    return merge(base_config().to_dict(), saved)


def _field(config, dotted: str):
    node = config
    for part in dotted.split("."):
        if part not in node:
            return None
        node = node[part]
    return node


def field_meant(name: str, known) -> str | None:
    """The field of `known` (dotted names) that `name`, which names none, probably means: one of the same
    name but for case (`optim.LR`), else one of the same section that is the same count (`sample.num_steps`
    -> `sample.steps`, not train.num_steps: each section has its own step count; `model.layers` ->
    `model.num_layers`), else one whose last part is `name`'s in any case (`train.lr` -> `optim.lr`,
    `train.warmup_steps` -> `optim.warmup_steps`, not train.num_steps: another setting that spells
    close), else one of the same section whose last part is close to `name`'s (`train.batchsize`), else
    the closest name (difflib); None where none is close."""
    known = list(known)
    section, _, leaf = name.lower().rpartition(".")
    in_section = {
        k.rpartition(".")[2].lower(): k for k in known if section and k.rpartition(".")[0].lower() == section
    }
    close = [k for k in known if k.lower() == name.lower()]
    close = close or [k for part, k in in_section.items() if _count_of(part) == _count_of(leaf)]
    close = close or [k for k in known if k.rpartition(".")[2].lower() == leaf]
    close = close or [in_section[m] for m in difflib.get_close_matches(leaf, list(in_section), n=1)]
    close = close or difflib.get_close_matches(name, known, n=1)
    return close[0] if close else None


def _count_of(leaf: str) -> str:
    """What a field name counts, as `field_meant` compares them: `num_steps`, `n_steps` and `steps` alike."""
    leaf = re.sub(r"^(num|n|number_of)_", "", leaf)
    return leaf[:-1] if leaf.endswith("s") else leaf


def listed(names: list[str], most: int = 8, separator: str = ", ") -> str:
    """The first `most` names, and how many more there are: "a, b and 3 more"; with separator "; ", for
    items that hold commas themselves (notes on captions, on samples), "a; b; and 3 more"."""
    more = len(names) - most
    tail = "" if more <= 0 else f" and {more} more" if separator == ", " else f"{separator}and {more} more"
    return separator.join(names[:most]) + tail


def flatten(config) -> dict:
    """{dotted name: value} of every field of a config (a ConfigDict or its dict)."""
    out = {}

    def walk(prefix, node):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            else:
                out[f"{prefix}{key}"] = value

    walk("", config.to_dict() if hasattr(config, "to_dict") else config)
    return out


def split_captions(value: str, field: str) -> list[str]:
    """The captions of a '|'-separated config field, stripped; errors.UserError for an empty one ('a||b',
    'a|'): a dropped caption would shift the index of every later sample."""
    from motion_ddpm_jax.errors import UserError

    captions = [piece.strip() for piece in str(value).split("|")]
    if not all(captions):
        empty = ", ".join(str(i + 1) for i, caption in enumerate(captions) if not caption)
        raise UserError(
            f"{field} {value!r} holds an empty caption (number {empty} of the {len(captions)} that '|' "
            "separates); remove the extra '|'"
        )
    return captions


def _kind(value) -> str:
    """'an integer' for a field holding one (steps, counts, sizes), else 'a number'."""
    return "an integer" if isinstance(value, int) and not isinstance(value, bool) else "a number"


def _type_of(default) -> tuple[str, tuple[type, ...]]:
    """What a field whose base_config default is `default` must hold, said and as types: a bool field
    true or false, an int field an integer (not a bool: True had trained at batch size 1), a float field
    a number, a str field a string."""
    if isinstance(default, bool):
        return "true or false", (bool,)
    if isinstance(default, int):
        return "an integer", (int,)
    if isinstance(default, float):
        return "a number", (int, float)
    return "a string", (str,)


def schedule_problem(config) -> tuple[str, str] | None:
    """What makes the learning-rate schedule other than the one asked for: optim.min_lr above optim.lr
    (the cosine would climb to it: `--config.optim.lr=1e-7`, a fine-tuning rate, left the default 1e-6
    above it), or optim.warmup_steps not shorter than train.num_steps less one (the warmup is cut to the
    run's steps less one, and the cosine to min_lr never runs), as (what, what to set); None otherwise.
    Refused at a run's first
    start (`train.run`); a run an earlier version let start so is told and goes on as it started (its
    optim.* cannot change on resume)."""
    if config.optim.min_lr > config.optim.lr:
        return (
            f"config field optim.min_lr is {config.optim.min_lr!r}, above optim.lr ({config.optim.lr!r}): "
            "the cosine would climb from lr to min_lr",
            "set --config.optim.min_lr to at most optim.lr",
        )
    warmup, steps = config.optim.warmup_steps, config.train.num_steps
    if steps > 0 and warmup >= max(steps - 1, 1):
        return (
            f"config field optim.warmup_steps is {warmup}, not shorter than train.num_steps ({steps}) less "
            f"one: the warmup would take the run's {steps - 1} updates after the first and the cosine to "
            "optim.min_lr never run",
            f"set --config.optim.warmup_steps below {max(steps - 1, 1)} (or -1: min(500, an epoch))",
        )
    return None


def validate(config, trained: dict | None = None) -> None:
    """Raise errors.UserError naming the first config field whose value is not allowed.

    trained: the config (a dict) that the run being resumed last trained with (`train.last_trained_config`),
    None for a new run. A field of another type than base_config's is refused unless the run trained with
    that very value: earlier versions let None in (a config file's "unset", e.g. data.max_clip_length,
    which their code read as 0), and a resume changes no such field (`train.check_resumable`), so refusing
    it had left the run with no way on."""
    from motion_ddpm_jax.errors import UserError

    for name, allowed in CHOICES.items():
        value = _field(config, name)
        if value is not None and value not in allowed:
            raise UserError(f"config field {name} is {value!r}; expected one of {', '.join(allowed)}")
    fields, known = flatten(config), flatten(base_config())
    missing = sorted(set(known) - set(fields))
    if missing:
        raise UserError(
            f"config lacks field(s) {listed(missing)}; a config file starts from motion_ddpm_jax/config.py's "
            "base_config() and changes its fields, it removes none"
        )
    unknown = sorted(set(fields) - set(known))
    if unknown:
        hints = [f"{name} (did you mean {meant}?)" if (meant := field_meant(name, known)) else name
                 for name in unknown]  # fmt: skip
        raise UserError(
            f"config field(s) {', '.join(hints)} not known; a config sets only the fields of "
            "motion_ddpm_jax/config.py's base_config"
        )
    # A config file's `= None` (None as "unset", as argparse defaults have it) or a run record's value of
    # another type: the bounds below skip None, and a comparison with it had raised a bare TypeError.
    before = flatten(with_defaults(trained)) if isinstance(trained, dict) else {}
    for name, value in fields.items():
        said, types = _type_of(known[name])
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            if name in before and type(before[name]) is type(value) and before[name] == value:
                continue  # the resumed run trained with it (an earlier version let it in)
            raise UserError(f"config field {name} is {value!r}; expected {said}")
    for name, value in fields.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"config field {name} is {value!r}; expected a finite number")
    for name, low in MINIMUM.items():
        value = _field(config, name)
        if value is not None and not value >= low:
            raise UserError(f"config field {name} is {value!r}; expected {_kind(value)} >= {low}")
    for name, low in ABOVE.items():
        value = _field(config, name)
        if value is not None and not value > low:
            raise UserError(f"config field {name} is {value!r}; expected {_kind(value)} > {low}")
    for name, (low, high) in RANGES.items():
        value = _field(config, name)
        if value is not None and not low <= value <= high:
            raise UserError(f"config field {name} is {value!r}; expected {_kind(value)} in [{low}, {high}]")
    for name, (low, high) in BELOW.items():
        value = _field(config, name)
        if name == "seed" and name in before and before[name] == value:
            continue  # a run an earlier version let train with it (its keys: seed % 2**32) goes on
        if value is not None and not low <= value < high:
            # A resumed run's record that an earlier version let in (sample.seed 2**32, say) had left the
            # run refused with no word of the way on: sample.* may change between a run's starts.
            kept = name.startswith("sample.") and name in before and before[name] == value
            on = (
                f" (the run's record holds it; resume with --config.{name}=<a value in that range>)"
                if kept
                else ""
            )
            raise UserError(
                f"config field {name} is {value!r}; expected {_kind(value)} in [{low}, {high}){on}"
            )
    # The diffusion first: the checks of sample.* below compare with diffusion.steps, and a fix they gave
    # (`diffusion.steps=10` had been told to set sample.steps to at most 10) was refused by this one next.
    from motion_ddpm_jax import diffusion

    try:
        diffusion.make_schedule(config.diffusion.schedule, config.diffusion.steps)
    except ValueError as error:
        raise UserError(f"config fields diffusion.schedule / diffusion.steps: {error}") from None
    if not (config.train.num_steps > 0 or config.train.num_epochs > 0):
        raise UserError(
            f"config fields train.num_steps ({config.train.num_steps}) and train.num_epochs "
            f"({config.train.num_epochs}) give a run of no steps; set one of them > 0 (num_steps > 0 "
            "overrides num_epochs)"
        )
    if str(config.train.sample_captions).strip():
        split_captions(config.train.sample_captions, "config field train.sample_captions")
    renders = config.train.sample_every > 0 and config.sample.sampler in ("ddim", "dpmpp_2m")
    if renders and config.sample.steps > config.diffusion.steps:
        raise UserError(
            f"config field sample.steps is {config.sample.steps}, more than diffusion.steps "
            f"({config.diffusion.steps}): train.sample_every's progress samples take that many "
            f"{config.sample.sampler} steps; set --config.sample.steps to at most {config.diffusion.steps}"
        )
    if renders and config.sample.steps == 1 and config.sample.ddim_spacing == "leading":
        raise UserError(
            "config fields sample.steps=1 and sample.ddim_spacing=leading: train.sample_every's progress "
            "samples would take their one step at t=0 (the starting noise returned as the sample); "
            "set --config.sample.steps above 1 or --config.sample.ddim_spacing=trailing"
        )
    if renders and config.sample.sampler == "dpmpp_2m" and config.sample.eta != 0:
        raise UserError(
            f"config field sample.eta is {config.sample.eta} but sample.sampler=dpmpp_2m is deterministic "
            "(train.sample_every's progress samples would be refused): set --config.sample.eta=0"
        )
    if (
        config.train.sample_every > 0
        and config.sample.guidance_scale != 1
        and not config.model.cond_drop_prob > 0
    ):
        raise UserError(
            f"config field sample.guidance_scale is {config.sample.guidance_scale:g} but "
            f"model.cond_drop_prob is {config.model.cond_drop_prob}: the model learns no unconditional "
            "prediction for guidance, so train.sample_every's progress samples would each be refused; set "
            "--config.sample.guidance_scale=1 or --config.model.cond_drop_prob above 0 (0.1 is the default)"
        )
    model = config.model
    for heads, width in (("num_heads", "latent_dim"), ("text_num_heads", "text_latent_dim")):
        if model[width] % model[heads]:
            raise UserError(f"model.{width}={model[width]} must be divisible by model.{heads}={model[heads]}")
