"""Entry point: python launch.py --config configs/<name>.py [--config.a.b=value] [--workdir DIR] [--mode M].

Modes:
- `train` (the default): train, resuming from the workdir's latest checkpoint (without `--config`, a
  `--workdir` that holds a run goes on with the config that run started with, its run.json, plus the
  `--config.*` overrides given: e.g. a larger `train.num_steps`);
- `sample`: generate motion from the workdir's checkpoint (`--config.sample.*`; the model, data statistics
  and tokenizer come from the checkpoint, so `--config` may be left out);
- `eval`: metrics of generated vs real motion (`--config.eval.*`, sampler settings from `sample.*`; the
  model from the checkpoint, the real motion from the config's `data.*`, or without `--config` from the
  data the checkpoint's run trained on, less the `--config.data.*` given);
- `train_autoencoder`: train the motion autoencoder that eval's FGD uses, saved beside the dataset;
- `prepare`: raw BVH + TextGrid recordings (BEAT's, or any skeleton's) at data.raw_root -> the prepared
  dataset cache at data.root (data.source=prepared: data.root is checked and summarised as it is, with
  the clips its loading leaves out);
- `smoke`: a quick end-to-end check of the pure core.
The workdir defaults to runs/<config file name>. Several hosts join through `jax.distributed` when the
config (`distributed.*`) or the environment asks for it (see README, "Training on a cluster").
"""

import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

_BASE_CONFIG = str(Path(__file__).resolve().parent / "configs" / "base.py")
MODES = ["train", "sample", "eval", "train_autoencoder", "prepare", "smoke"]
CHECKPOINT_MODES = ("sample", "eval")  # the checkpoint stands in for the config: --config is optional

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    _BASE_CONFIG,
    "A config file (configs/*.py); --config.a.b=value overrides one field. Needed by every mode but sample "
    "and eval (which take the checkpoint's), and train resuming a --workdir that holds a run (its run.json); "
    "the default shown is only where the overrides' types come from.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (checkpoints, logs); default runs/<config name>.")
_MODE = flags.DEFINE_enum("mode", "train", MODES, "What to do.")
_HOST_DEVICES = flags.DEFINE_integer(
    "host_devices",
    None,
    "CPU devices this process exposes; default: one per core (at most 8) for --mode sample and eval, whose "
    "samples split over them, and 1 otherwise. Unused where a GPU runs the program.",
)

_COMPILE_CACHE = flags.DEFINE_string(
    "compile_cache",
    "auto",
    "Where compiled programs are kept for later runs: auto (JAX_COMPILATION_CACHE_DIR if set, else "
    "$XDG_CACHE_HOME/motion_ddpm_jax/jax, i.e. ~/.cache/...), off, or a folder "
    "(motion_ddpm_jax/compile_cache.py).",
)


def _workdir(config_given: bool) -> str:
    if _WORKDIR.value:
        return _WORKDIR.value
    if not config_given:
        raise app.UsageError(f"--mode {_MODE.value} needs --workdir (the run folder) or --config")
    return str(Path("runs") / Path(config_flags.get_config_filename(flags.FLAGS["config"])).stem)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    mode = _MODE.value
    if not flags.FLAGS["verbosity"].present:  # the libraries' INFO logs drown the run's own lines
        logging.set_verbosity(logging.ERROR)
    config_given = flags.FLAGS["config"].present
    resumed = _run_to_resume() if not config_given and mode == "train" else None
    if not config_given and mode not in CHECKPOINT_MODES and resumed is None:
        raise app.UsageError(
            f"--mode {mode} needs --config configs/<name>.py"
            + (" (or --workdir of a run to resume: a folder with its run.json)" if mode == "train" else "")
        )
    config = _CONFIG.value
    import ml_collections

    if not isinstance(config, ml_collections.ConfigDict):
        raise app.UsageError(
            f"{config_flags.get_config_filename(flags.FLAGS['config'])}: get_config() returned a "
            f"{type(config).__name__}; it must return an ml_collections.ConfigDict (start from "
            "motion_ddpm_jax.config.base_config())"
        )

    from motion_ddpm_jax import config as config_lib
    from motion_ddpm_jax.errors import UserError

    overrides = config_flags.get_override_values(flags.FLAGS["config"])
    try:
        if resumed is not None:
            config = _resumed_config(resumed, overrides)
        from motion_ddpm_jax import distributed

        # Both before anything touches a jax backend.
        distributed.use_host_devices(
            distributed.host_device_count(mode, _HOST_DEVICES.value, distributed.usable_cores())
        )
        if mode == "train":
            distributed.initialize(config.distributed)
        from motion_ddpm_jax import compile_cache

        compile_cache.enable(_COMPILE_CACHE.value)
        config_lib.validate(config)
        if mode == "smoke":
            from motion_ddpm_jax import smoke

            smoke.run(config)
        elif mode == "prepare":
            from motion_ddpm_jax.data import beat

            source, raw = config.data.source, config.data.raw_root
            if source == "beat" or (source == "synthetic" and raw and Path(raw).is_dir()):
                dataset = beat.prepare_from_config(config.data)
            else:  # as training does: the demo set is written first; a prepared (HumanML3D) folder is read
                dataset = beat.dataset_from_config(config)
            counts, left_out = _clip_counts(dataset)
            clips = " / ".join(f"{count} {split}" for split, count in counts.items())
            print(
                f"{dataset.root}: {clips} clips, {dataset.feature_size} {dataset.representation} features "
                f"at {dataset.fps:g} fps"
            )
            if left_out:
                print(left_out)
        elif mode == "sample":
            from motion_ddpm_jax import sampling

            sampling.run(config, _workdir(config_given))
        elif mode == "eval":
            from motion_ddpm_jax import evaluate

            evaluate.run(
                config,
                _workdir(config_given),
                data_from_checkpoint=not config_given,
                data_set=[name.split(".", 1)[1] for name in overrides if name.startswith("data.")],
            )
        elif mode == "train_autoencoder":
            from motion_ddpm_jax import evaluate

            evaluate.train_autoencoder(config)
        else:
            from motion_ddpm_jax import train

            if resumed is not None:
                config = _latest_data_paths(config, _workdir(config_given), overrides)
            train.run(config, _workdir(config_given))
        if (line := compile_cache.summary()) is not None:
            import jax

            if jax.process_index() == 0:
                print(line)
    # Errors a user can act on carry a complete message (file, field or flag, and what was expected).
    except (UserError, OSError, FloatingPointError) as error:
        sys.exit(f"launch.py --mode {mode}: {error}")


def _run_to_resume() -> Path | None:
    """--workdir's run record when it has one (train without --config goes on with that run)."""
    if not _WORKDIR.value:
        return None
    from motion_ddpm_jax import train

    record = Path(_WORKDIR.value) / train.RUN_RECORD
    return record if record.is_file() else None


def _resumed_config(record: Path, overrides: dict):
    """The config a run started with (its run record; fields added since at their defaults) with the
    command line's --config.* overrides applied; printed so the run's log says where it came from."""
    import ml_collections

    from motion_ddpm_jax import config as config_lib
    from motion_ddpm_jax import train
    from motion_ddpm_jax.errors import UserError

    config = ml_collections.ConfigDict(config_lib.with_defaults(train.read_run_record(record)))
    for dotted, value in overrides.items():
        try:
            *parents, name = dotted.split(".")
            node = config
            for part in parents:
                node = node[part]
            node[name] = value
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise UserError(
                f"--config.{dotted}={value!r} does not apply to the config {record} records ({error}); give "
                "--config configs/<name>.py with the run's overrides instead"
            ) from None
    shown = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
    print(f"config: the one {record} records" + (f", with {shown}" if shown else ""), flush=True)
    return config


def _resolved(path: str) -> str:
    return str(Path(path).resolve()) if path else ""


def _latest_data_paths(config, workdir: str, overrides: dict):
    """A run resumed without --config trains on data.root / data.raw_root as its latest checkpoint records
    them (a resume given new paths moved them; run.json keeps the ones the run started with), but for
    those given on the command line. Unchanged where no checkpoint can be read (training says why)."""
    from motion_ddpm_jax import checkpoint

    fields = [name for name in ("root", "raw_root") if f"data.{name}" not in overrides]
    try:
        reader = checkpoint.Checkpointer(workdir, read_only=True)
        try:
            step = reader.latest_step()
            saved = reader.restore_metadata(step) if step is not None and fields else {}
        finally:
            reader.close()
    except checkpoint.CheckpointError:
        return config
    data = dict(saved.get("config", {}).get("data", {}))
    if isinstance(saved.get("data_root"), str):  # absolute, as resolved where that run trained
        data["root"] = saved["data_root"]
    moved = {
        name: data[name]
        for name in fields
        if isinstance(data.get(name), str) and _resolved(data[name]) != _resolved(config.data[name])
    }
    if moved:
        config.data.update(moved)
        shown = ", ".join(f"data.{name}={value!r}" for name, value in moved.items())
        print(f"data: where the latest checkpoint (step {step}) trained, {shown}", flush=True)
    return config


def _clip_counts(dataset) -> tuple[dict[str, object], str]:
    """Clips per split: as the prepared record counts them, or (a HumanML3D layout, which records none)
    as its split files list them once loaded with the config's length limits; "no" for a missing split,
    0 for one that lists no clip it can load. And what loading left out, and why (lines; "" if nothing)."""
    from motion_ddpm_jax.data import motion_text

    recorded = dataset.info.get("counts", {})
    counts, loaded, empty = {}, [], []
    for split in ("train", "val", "test"):
        if split in recorded:
            counts[split] = recorded[split]
        elif (dataset.root / f"{split}.txt").is_file():
            try:
                loaded.append(dataset.split(split))
                counts[split] = len(loaded[-1])
            except motion_text.EmptySplitError as error:  # training or eval on it says the same
                counts[split] = 0
                empty.append(f"{split}: {error}")
        else:
            counts[split] = "no"
    lines = [motion_text.describe_dropped(dataset, loaded) if loaded else "", *empty]
    return counts, "\n".join(line for line in lines if line)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a one-line message for an override of a config field that does not exist
    (ml_collections raises AttributeError / KeyError there, not a flags error, which absl would print as a
    traceback)."""
    try:
        return app.parse_flags_with_usage(argv)
    except SyntaxError as error:
        sys.exit(
            f"launch.py: --config {error.filename}, line {error.lineno}: {error.msg} (a Python syntax error)"
        )
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        message = " ".join(str(error).replace("\\n", " ").replace("\\", "").replace("'", "").split())
        file = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
        if file is None and "--config" in argv[:-1]:
            file = argv[argv.index("--config") + 1]
        if "has no attribute get_config" in message:
            sys.exit(f"launch.py: --config {file} defines no get_config() (it returns the ConfigDict)")
        if isinstance(error, KeyError):  # a section of the config that does not exist
            sections = ", ".join(base_sections())
            message = f"no config section or field {message.strip(chr(34))!r}; the sections are {sections}"
        sys.exit(f"launch.py: a --config override could not be applied: {message}")


def base_sections() -> list[str]:
    from motion_ddpm_jax.config import base_config

    return sorted(key for key, value in base_config().items() if hasattr(value, "items"))


if __name__ == "__main__":
    from motion_ddpm_jax import host_malloc

    host_malloc.tune()  # before jax starts its threads: see motion_ddpm_jax/host_malloc.py
    app.run(main, flags_parser=parse_flags)
