"""Entry point: python launch.py --config configs/<name>.py [--config.a.b=value] [--workdir DIR] [--mode M].

Modes:
- `train` (the default): train, resuming from the workdir's latest checkpoint (without `--config`, a
  `--workdir` that holds a run goes on with the config that run started with, its run.json, with the
  train.* / sample.* / eval.* and data paths of its latest checkpoint, plus the `--config.*` overrides
  given: e.g. a larger `train.num_steps`; with `--config`, the file's and the overrides' train.* /
  sample.* / eval.* and data paths, each that differs from the latest checkpoint's logged, old -> new);
- `sample`: generate motion from the workdir's checkpoint (`--config.sample.*`; the model, data statistics
  and tokenizer come from the checkpoint, so `--config` may be left out, and an override of another
  section that differs from the checkpoint's is refused);
- `eval`: metrics of generated vs real motion (`--config.eval.*`, sampler settings from `sample.*`; the
  model from the checkpoint, the real motion from the config's `data.*`, or without `--config` from the
  data the checkpoint's run trained on, less the `--config.data.*` given, and the FGD autoencoder in that
  run's eval.autoencoder_dir unless given; `eval.repeats` > 1 samples n
  times, seeds sample.seed + k, and reports each generated metric's mean ± its 95% interval);
- `train_autoencoder`: train the motion autoencoder that eval's FGD uses, saved beside the dataset (without
  `--config`, `--workdir` of a trained run: the data, eval.autoencoder_* and seed its checkpoint holds);
- `prepare`: raw BVH + TextGrid recordings (BEAT's, or any skeleton's) at data.raw_root -> the prepared
  dataset cache at data.root (data.source=prepared: data.root is checked and summarised as it is, with
  the clips its loading leaves out);
- `smoke`: a quick end-to-end check of the pure core;
- `config`: print the config as `train` would use it (the file, or a resumed run's record and latest
  checkpoint, and the overrides), checked as train checks it before loading data (its fields, against
  the --workdir's run, and train.batch_size against this machine's devices), one `name = value` per line
  on stdout; writes nothing.
`--config` takes a config file (configs/<name>.py) or a run's record (<workdir>/run.json: the config that
run started with, checked and overridden as a file's; the new run needs its own --workdir). A `~` that
starts --workdir or a path field of the config (`PATH_FIELDS`) is the user's home folder.
The workdir defaults to runs/<config file name> (runs/<name>_small for `FILE:small`). Several hosts join
through `jax.distributed` when the config (`distributed.*`) or the environment asks for it (see README,
"Training on a cluster").
"""

import difflib
import errno
import json
import os
import signal
import sys
import traceback
import warnings
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

ROOT = Path(__file__).resolve().parent
_BASE_CONFIG = str(ROOT / "configs" / "base.py")
MODES = ["train", "sample", "eval", "train_autoencoder", "prepare", "smoke", "config"]
CHECKPOINT_MODES = ("sample", "eval")  # the checkpoint stands in for the config: --config is optional


class ConfigSourceError(Exception):
    """A --config that names no config: a missing file, a folder, a .json that is no run record. Not a
    ValueError, which absl would print after its usage text; `parse_flags` prints it as one line."""


class ConfigSourceParser(flags.ArgumentParser):
    """--config's parser: a config file as ml_collections' own parser (`file_parser`) loads it, `~`
    expanded, a path that names no file refused in one line saying what was probably meant, and a run
    record (run.json) read as the config that run started with."""

    def __init__(self, file_parser):
        self.file_parser = file_parser

    def flag_type(self):
        return self.file_parser.flag_type()

    def parse(self, path):
        file, colon, argument = str(path).partition(":")
        file = os.path.expanduser(file)
        problem = _config_source_problem(file)
        if problem:
            raise ConfigSourceError(f"--config {path}: {problem}")
        if _is_run_record(file):
            config = _config_of_record(_read_record(file), f"--config {path}")
            config.lock()
            return config
        try:
            config = self.file_parser.parse(file + colon + argument)
        except (TypeError, ValueError) as error:  # raised by get_config: the traceback's last line says it
            lines = [line for line in str(error).splitlines() if line.strip()]
            if not lines or "Error whilst parsing config file" not in lines[0]:
                raise
            said = lines[-1].strip()
            if said.startswith("ValueError: "):  # get_config's own message
                said = said.removeprefix("ValueError: ")
            elif colon and "positional argument" in said:  # FILE:arg of a get_config() that takes none
                said = f"its get_config() takes no argument, so ':{argument}' names nothing ({said})"
            raise ConfigSourceError(f"--config {path}: {said}") from None
        except (SyntaxError, ConfigSourceError):
            raise  # parse_flags says a syntax error with its line
        except Exception as error:  # noqa: BLE001 - the file's own code failed: its imports or get_config
            # (an AttributeError or KeyError here had been said as "a --config override could not be
            # applied", naming no file; an ImportError or NameError was a traceback)
            if "has no attribute get_config" in str(error).replace("'", ""):
                raise  # parse_flags says the file defines none
            said = str(error)
            if isinstance(error, (AttributeError, KeyError)):  # ml_collections' repr of a missing key
                said = " ".join(said.replace("\\n", " ").replace("\\", "").replace("'", "").split())
            raise ConfigSourceError(
                f"--config {path}{_line_in(error, file)}: {type(error).__name__}: {said}"
            ) from None
        if config is None:  # ml_collections only warns; absl then raised IllegalFlagValueError (a traceback)
            raise ConfigSourceError(
                f"--config {path}: get_config() returned None; it must return the ConfigDict (a missing "
                "`return config`?)"
            )
        if type(config).__name__ == "_ErrorConfig":  # an OSError inside the file (one it opens, say)
            raise ConfigSourceError(f"--config {path}: loading it failed: {vars(config)['_error']}")
        return config


def _line_in(error: BaseException, file: str) -> str:
    """', line N' of the innermost line of `file` in `error`'s traceback ('' where it has none)."""
    target = os.path.realpath(file)
    lines = [
        line
        for frame, line in traceback.walk_tb(error.__traceback__)
        if os.path.realpath(frame.f_code.co_filename) == target
    ]
    return f", line {lines[-1]}" if lines else ""


def _is_run_record(file: str) -> bool:
    return file.endswith(".json")


def _shown(path: Path) -> str:
    """`path` as the user would type it here: relative to the working directory where it lies under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def _config_source_problem(file: str) -> str | None:
    """What is wrong with --config's path, or None where it names a file: it is missing (relative to
    which folder, and what was probably meant: the name with .py, the same path from the repository's
    root, a config file of the repository with a close name) or a folder (a run's: what to give)."""
    path = Path(file)
    if not file:
        return "an empty path; give a config file (configs/<name>.py) or a run's run.json"
    if path.exists() and not path.is_dir():  # a file (or a device, a pipe): ml_collections loads it
        return None
    if path.is_dir():
        if (path / RUN_RECORD).is_file():
            return (
                f"is a run's folder, not a config: --workdir {file} resumes that run, --config "
                f"{path / RUN_RECORD} starts a new run (its own --workdir) with the config it started with"
            )
        return "is a folder, not a config file (configs/<name>.py, or a run's run.json)"
    where = "" if path.is_absolute() else f" (relative to the current directory, {Path.cwd()})"
    guesses = [path.with_name(path.name + ".py")] if path.suffix != ".py" else []
    if not path.is_absolute():
        guesses += [ROOT / guess for guess in (path, *guesses)]
    meant = next((guess for guess in guesses if guess.is_file()), None)
    if meant is None:  # a config of the repository with a close name, else the repository's configs
        configs = sorted((ROOT / "configs").glob("*.py"))
        close = difflib.get_close_matches(path.stem, [c.stem for c in configs], n=1)
        if close:
            meant = ROOT / "configs" / f"{close[0]}.py"
        elif path.suffix in ("", ".py") and configs:
            listed = ", ".join(_shown(c) for c in configs)
            return f"no such file{where}; the repository's config files are {listed}"
    if meant is None:
        return f"no such file{where}"
    elsewhere = meant.is_relative_to(ROOT) and Path.cwd().resolve() != ROOT
    return f"no such file{where}; did you mean {_shown(meant)}?" + (
        f" (the repository's configs name their data relative to the current directory too: run launch.py "
        f"from {ROOT})"
        if elsewhere
        else ""
    )


RUN_RECORD = "run.json"  # train.RUN_RECORD, named here without importing train (and jax) to parse flags


def _read_record(file: str) -> dict:
    """The config dict of a run record given as --config, or ConfigSourceError saying what it is not."""
    try:
        saved = json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigSourceError(
            f"--config {file}: a .json config is a run's record (<workdir>/{RUN_RECORD}), read as JSON; this "
            f"one is not ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise ConfigSourceError(
            f"--config {file}: a .json config is a run's record (<workdir>/{RUN_RECORD}): a JSON object "
            "whose 'config' holds the config the run started with; this one has no such 'config'"
        )
    return saved["config"]


# Of distributed.*, not resumed: the allocation's (a requeue may get another number of hosts, whose
# address and ids come with it), taken from the command line and environment as at a start.
PER_PROCESS = ("coordinator_address", "num_processes", "process_id", "local_device_ids")


def _config_of_record(saved: dict, source: str):
    """The ConfigDict of a run record's config (fields added since at their defaults), with the
    per-process fields of distributed.* at their defaults: the record holds process 0's (its process_id,
    devices and coordinator address, where it ran), which every process of a requeue or a new run would
    otherwise take, and the process count, which a resume may change (checkpoints restore on any); those
    come from this command line and the environment, as at a fresh start, and the run-wide settings
    (enabled, the timeout) are kept."""
    import ml_collections

    from motion_ddpm_jax import config as config_lib

    try:
        config = ml_collections.ConfigDict(config_lib.with_defaults(saved))
    except (TypeError, ValueError) as error:  # a value ConfigDict takes no field from
        raise ConfigSourceError(f"{source}: its config cannot be read ({error})") from None
    defaults = config_lib.base_config().distributed
    if isinstance(config.get("distributed"), ml_collections.ConfigDict):
        for name in PER_PROCESS:
            config.distributed[name] = defaults[name]
    return config


# Without --config, ml_collections applies the --config.* overrides to the default file as it defines the
# flag, here: an override naming no field fails then (a traceback), so the error waits for parse_flags.
_DEFINE_ERROR: Exception | None = None
try:
    _CONFIG = config_flags.DEFINE_config_file(
        "config",
        _BASE_CONFIG,
        "A config file (configs/*.py), or a run's <workdir>/run.json (the config it started with; a new run "
        "from it needs --workdir); --config.a.b=value overrides one field. Needed by every mode but sample "
        "and eval (which take the checkpoint's), train and config given a --workdir that holds a run (its "
        "run.json), and train_autoencoder given a --workdir of a trained run; the default shown is only "
        "where the overrides' types come from.",
        lock_config=True,
    )
except (AttributeError, KeyError) as error:  # parse_flags says it, as it says one given with --config
    _DEFINE_ERROR, _CONFIG = error, None
else:
    # absl parses --config's value with the flag's parser (the default above, which exists, parsed already).
    flags.FLAGS["config"].parser = ConfigSourceParser(flags.FLAGS["config"].parser)


class HomePathParser(flags.ArgumentParser):
    """A path flag with a leading `~` expanded: a shell leaves `--workdir=~/x` as it is (it expands `~`
    only at the start of a word), and a folder named `~` would be made in the working directory."""

    def parse(self, argument):
        if isinstance(argument, str) and not argument.strip():  # `--workdir "$RUN"` with RUN unset
            raise ValueError(
                "an empty path; give the run folder, or leave --workdir out for runs/<config name>"
            )
        return os.path.expanduser(argument) if isinstance(argument, str) else argument

    def flag_type(self):
        return "string"


_WORKDIR = flags.DEFINE(
    HomePathParser(), "workdir", None, "Run folder (checkpoints, logs); default runs/<config name>."
)
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
    file = _config_file()
    if _is_run_record(file):  # runs/run would be no one's: the new run names its folder
        from motion_ddpm_jax.errors import UserError

        if _MODE.value in CHECKPOINT_MODES:
            raise UserError(f"--mode {_MODE.value} needs --workdir, the run whose checkpoint it reads")
        raise UserError(
            f"--config {file} starts a new run with the config its run started with: give it a --workdir "
            f"(--workdir {Path(file).parent} without --config resumes that run instead)"
        )
    # `FILE:small` has a folder of its own: the small model's check run in runs/<name> had been resumed by
    # (and refused) the full-size config's run, and sampled by --mode sample --config FILE.
    argument = config_flags.get_config_filename(flags.FLAGS["config"]).partition(":")[2]
    return str(Path("runs") / (Path(file).stem + (f"_{argument}" if argument else "")))


def _config_file() -> str:
    """--config's file as given (`~` expanded; without a `:argument` for get_config)."""
    return os.path.expanduser(config_flags.get_config_filename(flags.FLAGS["config"]).partition(":")[0])


# The config fields that name files or folders: a leading `~` in them is the user's home (`_home_paths`).
PATH_FIELDS = (
    "data.raw_root",
    "data.root",
    "sample.text_file",
    "sample.output_dir",
    "eval.output",
    "eval.autoencoder_dir",
    "train.init_from",
)


def _home_paths(config, overrides: dict) -> dict:
    """`config`'s path fields (`PATH_FIELDS`) with a leading `~` expanded to the user's home, as a shell
    does at the start of a word but not after `--config.data.root=` (nor in a config file); and the
    overrides so (they are compared with checkpoints' values and applied to run records)."""
    for name in PATH_FIELDS:
        section, field = name.split(".")
        value = config[section][field] if section in config and field in config[section] else None
        if isinstance(value, str) and value.startswith("~"):
            config[section][field] = os.path.expanduser(value)
    return {
        name: os.path.expanduser(value) if name in PATH_FIELDS and isinstance(value, str) else value
        for name, value in overrides.items()
    }


def main(argv):
    try:
        return _main(argv)
    except app.UsageError as error:  # one line, as every other refusal: absl would print its usage first
        sys.exit(f"launch.py: {error} (launch.py --help lists the flags)")


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    mode = _MODE.value
    if not flags.FLAGS["verbosity"].present:  # the libraries' INFO logs drown the run's own lines
        logging.set_verbosity(logging.ERROR)
    config_given = flags.FLAGS["config"].present
    # prepare and train_autoencoder stop on SIGTERM as on Ctrl-C, removing their staging copies; train
    # saves a checkpoint on it; sample and eval stop at once (a Python handler would wait for the sampler's
    # compiled loop to end) and leave their claim, which the next sampling names.
    if mode in ("prepare", "train_autoencoder") and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    resumable = mode in ("train", "config")
    resumed = _run_to_resume() if not config_given and resumable else None
    from_run = mode == "train_autoencoder" and bool(_WORKDIR.value)  # the data of that run's checkpoint
    if not config_given and mode not in CHECKPOINT_MODES and resumed is None and not from_run:
        raise app.UsageError(
            f"--mode {mode} needs --config configs/<name>.py"
            + (" (or --workdir of a run to resume: a folder with its run.json)" if resumable else "")
            + (" (or --workdir of a trained run)" if mode == "train_autoencoder" else "")
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

    overrides = _home_paths(config, config_flags.get_override_values(flags.FLAGS["config"]))
    from_record = config_given and _is_run_record(_config_file())
    note = _to_stderr if mode == "config" else _say  # config's stdout holds the fields alone
    warnings.showwarning = _warnings_to(note)
    try:
        if resumed is not None:
            config = _resumed_config(resumed, overrides, note)
        elif from_record:
            if mode in ("train", "config", *CHECKPOINT_MODES):
                _workdir(config_given)  # refused first where none is given
            shown = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
            note(
                f"config: the one {_config_file()} records (the config its run started with)"
                + (f", with {shown}" if shown else "")
            )
        from motion_ddpm_jax import distributed

        # All before anything touches a jax backend (opening a checkpoint does: Orbax asks jax for the
        # process index). --mode config counts the devices (train.batch_size) without taking a GPU's
        # memory, which jax would otherwise reserve most of for a run that never comes.
        if mode == "config":
            os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        distributed.use_host_devices(
            distributed.host_device_count(mode, _HOST_DEVICES.value, distributed.usable_cores())
        )
        if mode == "train":
            distributed.initialize(config.distributed)
            distributed.hold_sigterm()  # from the join on, a SIGTERM stops train.run at its first step
        from motion_ddpm_jax import compile_cache

        if mode != "config":
            compile_cache.enable(_COMPILE_CACHE.value, note=_say)
        if resumed is not None:  # opens the checkpoint, which starts jax: after the device settings above
            config = _latest_settings(config, _workdir(config_given), overrides, note)
        if from_record and mode in ("train", "config"):
            _settings_after_record(
                config, Path(_config_file()), Path(_workdir(config_given)), overrides, note
            )
        if mode in CHECKPOINT_MODES:
            _unused_overrides(config, overrides, mode, _workdir(config_given))
            if config_given:
                _config_file_note(config, mode, _workdir(config_given), overrides)
            if mode == "eval" and (line := _eval_unread_sample(overrides)):
                _say(line)
        trained = None  # what the run to resume last trained with: validate lets its values be
        if mode in ("train", "config"):
            from motion_ddpm_jax import train

            recorded = train.last_trained_config(Path(_workdir(config_given)))
            trained = None if recorded is None else recorded[1]
        # sample.steps against diffusion.steps (and the other checks of train.sample_every's progress
        # samples) are training's: --mode sample and eval take the diffusion from the checkpoint, not from
        # the config file, and `sampling.generate` checks sample.* against that one.
        checked = config
        if mode in CHECKPOINT_MODES:
            checked = config.copy_and_resolve_references()
            checked.train.sample_every = 0
        config_lib.validate(checked, trained)
        if mode == "config":
            from motion_ddpm_jax import train

            workdir = Path(_workdir(config_given))
            train.claim_workdir(workdir, config)  # reads only: what train would refuse
            recorded = train.last_trained_config(workdir)  # and what it would change, as train logs it
            if recorded is not None and (changes := train.changed_settings(recorded[1], config)):
                note(train.changes_line(recorded[0], changes))
            _check_schedule(config, workdir, note)  # refused by train before it loads data
            # Refused by train before it loads data too: against this machine's devices (--host_devices's
            # on a CPU), as train here would count them (without preallocating a GPU's memory: above).
            import jax

            train.check_batch_divides(int(config.train.batch_size), jax.device_count(), " on this machine")
            for name, value in config_lib.flatten(config).items():
                print(f"{name} = {value!r}")
        elif mode == "smoke":
            from motion_ddpm_jax import smoke

            smoke.run(config)
        elif mode == "prepare":
            from motion_ddpm_jax.data import beat

            source, raw = config.data.source, config.data.raw_root
            recorded = bool(raw) and Path(raw).is_dir() and any(Path(raw).iterdir())  # else: write the demo
            if source == "beat" or (source == "synthetic" and recorded):
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

            if not config_given:
                config = _checkpoint_autoencoder(config, _workdir(config_given), overrides)
            evaluate.run(
                config,
                _workdir(config_given),
                data_from_checkpoint=not config_given,
                data_set=[name.split(".", 1)[1] for name in overrides if name.startswith("data.")],
            )
        elif mode == "train_autoencoder":
            from motion_ddpm_jax import fgd

            if not config_given:
                config = _checkpoint_data(config, _workdir(config_given), overrides)
            fgd.train_autoencoder(config)
        else:
            from motion_ddpm_jax import train

            workdir = _workdir(config_given)
            _check_schedule(config, Path(workdir), note)
            train.run(config, workdir)
        if (line := compile_cache.summary()) is not None:
            import jax

            if jax.process_index() == 0:
                print(line)
    # Errors a user can act on carry a complete message (file, field or flag, and what was expected).
    except (UserError, OSError, FloatingPointError) as error:
        message = f"launch.py --mode {mode}: {_described(error)}"
        if _joined_others():  # sys.exit would wait at jax's shutdown barrier for processes that wait on us
            print(message, file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(1)
        sys.exit(message)
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM in prepare / train_autoencoder (`_interrupt`)
        note = _interrupted_note(mode, config_given)
        print(f"launch.py --mode {mode}: interrupted; {note}", file=sys.stderr, flush=True)
        status = 128 + (signal.SIGTERM if interrupt.args == ("SIGTERM",) else signal.SIGINT)
        if _joined_others():  # a normal exit would wait at jax's shutdown barrier for the other processes
            sys.stdout.flush()
            os._exit(status)
        sys.exit(status)
    except Exception:
        if not _joined_others():
            raise
        # Any other error of a process joined to others (a collective that failed: another process of the
        # run is gone, killed or its node crashed) ends it at once: Python's exit would wait at jax's
        # shutdown barrier (~90 s) for processes that will not come, then abort without a word.
        traceback.print_exc()
        print(
            f"launch.py --mode {mode}: stopped by the error above (where it names a collective, another "
            f"process of this run is gone: its log says why); {_interrupted_note(mode, config_given)}",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        os._exit(1)


def _check_schedule(config, workdir: Path, note) -> None:
    """`config.schedule_problem` as training takes it: a first start is refused (UserError with the fix), a
    resume of a run an earlier version let start so is told and goes on. One function for --mode train
    and --mode config, which must refuse what training refuses (it had printed such a config, exit 0)."""
    from motion_ddpm_jax import config as config_lib
    from motion_ddpm_jax import train
    from motion_ddpm_jax.errors import UserError

    if problem := config_lib.schedule_problem(config):
        what, fix = problem
        if train.last_trained_config(workdir) is None:  # a first start: refused
            raise UserError(f"{what}; {fix}")
        note(f"{what}: this resume goes on so (optim.* cannot change on resume)")


def _joined_others() -> bool:
    """Whether this process joined other processes (jax.distributed) that may wait on it in a collective:
    an error of this one alone (its data missing) then leaves them waiting, and a normal exit waits at
    jax's shutdown barrier for them, until initialization_timeout_s (300 s) ends both in a SIGABRT."""
    jax = sys.modules.get("jax")
    try:
        return jax is not None and jax.distributed.is_initialized() and jax.process_count() > 1
    except Exception:  # noqa: BLE001 - a jax that cannot say: exit as usual
        return False


def _interrupted_note(mode: str, config_given: bool) -> str:
    """What an interrupted mode leaves: for train, its checkpoints (read from the folder names alone)."""
    if mode != "train":
        return "nothing half-written is left under the names it writes"
    from motion_ddpm_jax.errors import UserError

    try:
        folder = Path(_workdir(config_given)) / "checkpoints"
        steps = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())
    except (OSError, app.UsageError, UserError):
        steps = []
    if not steps:
        return "no checkpoint was written"
    return f"its checkpoints up to step {steps[-1]} stay in {folder}: start it again to resume"


def _described(error: BaseException) -> str:
    """An error as one line; a full disk names the file it was writing where the error knows it."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        where = f" writing {error.filename}" if error.filename else ""
        return f"no space left on the device{where} ({error}); free some space and run it again"
    return str(error)


def _interrupt(signum, frame):
    """SIGTERM in prepare and train_autoencoder: stop as Ctrl-C does, so that what they were writing (their
    staging copies) is removed on the way out."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _run_to_resume() -> Path | None:
    """--workdir's run record when it has one (train without --config goes on with that run)."""
    if not _WORKDIR.value:
        return None
    from motion_ddpm_jax import train

    record = Path(_WORKDIR.value) / train.RUN_RECORD
    return record if record.is_file() else None


def _say(line: str) -> None:
    print(line, flush=True)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _warnings_to(say):
    """Python's warnings.showwarning for this run: the project's own warnings (`errors.ProjectWarning`: a
    HumanML3D-layout folder read at another fps or unit, a skeleton's oddity, a glyph a font lacks) become
    a `warning: ...` line through `say`, where the run's other notes go (stdout: a log kept from stdout
    alone had lost them), rather than Python's `file:line: UserWarning:` pair on stderr; every other
    warning (numpy's, jax's, a deprecation), wherever it is raised, keeps Python's display. Filters still
    apply first (`python -W error` raises)."""
    from motion_ddpm_jax.errors import ProjectWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, ProjectWarning):
            say(f"warning: {message}")
        else:
            shown(message, category, filename, lineno, file, line)

    return show


def _resumed_config(record: Path, overrides: dict, note=_say):
    """The config a run started with (its run record; fields added since at their defaults; the
    per-process fields of distributed.* at theirs: `_config_of_record`) with the command line's
    --config.* overrides applied; printed so the run's log says where it came from."""
    from motion_ddpm_jax import train
    from motion_ddpm_jax.errors import UserError

    try:
        config = _config_of_record(train.read_run_record(record), str(record))
    except ConfigSourceError as error:
        raise UserError(str(error)) from None
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
    note(f"config: the one {record} records" + (f", with {shown}" if shown else ""))
    return config


def _settings_after_record(config, record: Path, workdir: Path, overrides: dict, note=_say) -> None:
    """A new run from a run's record (--config <run>/run.json) takes the config that run started with; a
    later resume of it may have changed its train.*, sample.*, eval.* or data paths (a longer
    train.num_steps), which only its checkpoints hold: say those that the new run's config has otherwise,
    but for the overrides given, and how to take them (resuming that run in its own folder, training
    says what it changes)."""
    from motion_ddpm_jax import train

    if workdir.resolve() == record.parent.resolve():
        return
    recorded = train.last_trained_config(record.parent)
    if recorded is None or not recorded[0].startswith("latest checkpoint"):
        return
    later = [c for c in train.changed_settings(recorded[1], config) if c[0] not in overrides]
    if later:
        shown = ", ".join(f"{name}={was!r} (here {now!r})" for name, was, now in later)
        note(
            f"config: {record} holds the config its run started with; that run's {recorded[0]} trained "
            f"with {shown}: give --config.<field>=<value> for those to take"
        )


# The config sections --mode sample and eval read; everything else comes from the checkpoint.
READ_BY = {"sample": ("sample",), "eval": ("sample", "eval", "data")}


def _unused_overrides(config, overrides: dict, mode: str, workdir: str) -> None:
    """--mode sample and eval take the model, the diffusion and the rest from the checkpoint: a command-line
    override of a field they do not read, with a value other than the checkpoint's, would be ignored, so
    it is refused, naming the checkpoint's value. One equal to it (a training command line repeated) is
    accepted, and set back to the config file's value in `config`: validation checks what was given
    against the file's other fields, and the checkpoint's config passed when it trained."""
    from motion_ddpm_jax import checkpoint
    from motion_ddpm_jax.errors import UserError

    # Within the sections it reads, the fields `_FROM_CHECKPOINT` names are the checkpoint's too (eval's
    # data.max_motion_length: each clip is cut at the model's; an override had been dropped without a word).
    taken = tuple(prefix for prefix in _FROM_CHECKPOINT[mode][0] if not prefix.endswith("."))
    unused = [name for name in overrides if name.split(".", 1)[0] not in READ_BY[mode] or name in taken]
    if not unused:
        return
    step, theirs = _trained_config(config, workdir)
    if theirs is not None:
        differ = [
            name
            for name in unused
            if name in theirs and _comparable(theirs[name]) != _comparable(overrides[name])
        ]
        if differ:
            shown = "; ".join(f"--config.{n}={overrides[n]!r} (it has {theirs[n]!r})" for n in differ)
            read = ", ".join(f"{section}.*" for section in READ_BY[mode])
            also = [name for name in differ if name.split(".", 1)[0] in READ_BY[mode]]
            also = f" (and its {', '.join(also)}, which the model was built for)" if also else ""
            raise UserError(
                f"--mode {mode} takes everything but {read} from the checkpoint "
                f"{checkpoint.checkpoint_dir(workdir)}/{step}{also}, so these overrides would be ignored: "
                f"{shown}. "
                "Drop them: a different model, diffusion or loss needs a run trained with it (and the "
                "sampling noise's seed is sample.seed)"
            )
    flag = flags.FLAGS["config"]
    given = flag.parser.parse(flag.config_filename)  # the config file's values, before the overrides
    for name in unused:
        section, field = name.split(".", 1) if "." in name else (None, name)
        node = config if section is None else config[section]
        node[field] = given[name] if section is None else given[section][field]


# The sample.* fields --mode eval reads: it draws one sample per clip, of the clip's caption and length.
_EVAL_READS = (
    *("sampler", "steps", "eta", "ddim_spacing", "guidance_scale", "seed", "batch_size", "group_lengths"),
    *("use_ema", "checkpoint_step"),
)


def _eval_unread_sample(overrides: dict) -> str | None:
    """A note naming the sample.* overrides --mode eval does not read (sample.num_samples=4 drew one sample
    per clip without a word): the captions, lengths and count are the clips', and it writes no sample
    files; None where there are none."""
    unread = [name for name in overrides if name.startswith("sample.") and name[7:] not in _EVAL_READS]
    if not unread:
        return None
    shown = ", ".join(f"{name}={overrides[name]!r}" for name in unread)
    return (
        "note: --mode eval draws one sample per clip (eval.repeats times), of its caption and length, and "
        f"writes no sample files: {shown} {'is' if len(unread) == 1 else 'are'} not used (they are --mode "
        "sample's)"
    )


# What --mode sample and eval take from the checkpoint whatever --config says (the network, and for sample
# the motion's format: the frame rate its animations play at, the features it decodes), and how the note
# names it.
_FROM_CHECKPOINT = {
    "sample": (
        ("model.", "diffusion.", "data.fps", "data.representation", "data.max_motion_length"),
        "the model, the diffusion and the motion's frame rate, representation and longest length",
    ),
    "eval": (
        ("model.", "diffusion.", "data.max_motion_length"),
        "the model, the diffusion and the longest length",
    ),
}
_SHOWN = 4


def _config_file_note(config, mode: str, workdir: str, overrides: dict, note=_say) -> None:
    """--mode sample or eval with --config: where the file's model.*, diffusion.* (and the data.* fields
    `_FROM_CHECKPOINT` names) differ from those the checkpoint trained with, one line naming them (the
    first few, with the checkpoint's values) and saying that the checkpoint's are used: a file of another
    run's, or one edited since, does not change what is sampled, and a user reading their own file would
    think it did. Overrides are `_unused_overrides`'s concern; nothing is said where no checkpoint can be
    read (the mode says why)."""
    from motion_ddpm_jax import checkpoint
    from motion_ddpm_jax import config as config_lib

    step, theirs = _trained_config(config, workdir)
    if theirs is None:
        return
    ours = config_lib.flatten(config)
    taken, what = _FROM_CHECKPOINT[mode]
    differ = [
        name
        for name, value in ours.items()
        if name.startswith(taken)
        and name not in overrides
        and name in theirs
        and _comparable(theirs[name]) != _comparable(value)
    ]
    if not differ:
        return
    shown = ", ".join(f"{name}={ours[name]!r} (checkpoint: {theirs[name]!r})" for name in differ[:_SHOWN])
    more = f" and {len(differ) - _SHOWN} more" if len(differ) > _SHOWN else ""
    note(
        f"note: --mode {mode} takes {what} from the checkpoint "
        f"{checkpoint.checkpoint_dir(workdir)}/{step}, not from {_config_file()}, whose {shown}{more} "
        "are not used"
    )


def _checkpoint_data(config, workdir: str, overrides: dict):
    """`config` with what the FGD autoencoder depends on -- data.*, eval.autoencoder_* and seed -- as the run
    whose latest checkpoint is in `workdir` had them (data.* as --mode eval without --config takes them),
    but for those given on the command line: the same autoencoder as `--config <that run's config>`."""
    from motion_ddpm_jax import checkpoint, lineage
    from motion_ddpm_jax import config as config_lib

    step, saved = _checkpoint_metadata(workdir)
    if step is None:
        raise checkpoint.CheckpointError(
            f"{checkpoint.checkpoint_dir(workdir)} holds no checkpoint: --mode train_autoencoder "
            "--workdir takes the data a trained run's checkpoint names; give --config instead"
        )
    if not isinstance(saved.get("config"), dict):
        raise checkpoint.CheckpointError(
            f"{checkpoint.checkpoint_dir(workdir)}/{step}: its metadata holds no config (not written by "
            "train.run); give --config instead"
        )
    given = [name.split(".", 1)[1] for name in overrides if name.startswith("data.")]
    config = lineage.with_checkpoint_data(config, saved["config"], given, saved.get("data_root"))
    theirs = config_lib.flatten(config_lib.with_defaults(saved["config"]))
    for name in [n for n in theirs if n.startswith("eval.autoencoder_") or n == "seed"]:
        if name not in overrides:
            section, _, field = name.rpartition(".")
            (config[section] if section else config)[field] = theirs[name]
    print(f"data: the one the run in {workdir} trained on, data.root={config.data.root}", flush=True)
    return config


def _checkpoint_autoencoder(config, workdir: str, overrides: dict):
    """--mode eval without --config: `config` with the FGD autoencoder's folder (eval.autoencoder_dir) of
    the run whose checkpoint it evaluates, unless given on the command line. `--mode train_autoencoder
    --workdir` saves the autoencoder there (`_checkpoint_data`), as FGD-skipped notes advise; eval had
    looked in <data.root>/fgd_autoencoder instead, and skipped the FGD after that very advice was taken (or
    used another autoencoder it found there). The other eval.* fields stay the defaults."""
    if "eval.autoencoder_dir" in overrides:
        return config
    _, theirs = _trained_config(config, workdir)
    folder = (theirs or {}).get("eval.autoencoder_dir")
    if isinstance(folder, str) and folder:
        config.eval.autoencoder_dir = os.path.expanduser(folder)
        print(f"eval: the FGD autoencoder in eval.autoencoder_dir={folder}, as the run in {workdir} names it")
    return config


def _trained_config(config, workdir: str) -> tuple[int | None, dict | None]:
    """(step, flattened config) of the checkpoint --mode sample / eval will read (sample.checkpoint_step, -1:
    the latest), its missing fields at their defaults; config None where it cannot be read (the mode
    itself says what is wrong with the checkpoint)."""
    from motion_ddpm_jax import checkpoint
    from motion_ddpm_jax import config as config_lib

    wanted = int(config.sample.checkpoint_step)
    try:
        step, saved = _checkpoint_metadata(workdir, None if wanted < 0 else wanted)
    except checkpoint.CheckpointError:
        return wanted, None
    if not isinstance(saved.get("config"), dict):
        return step, None
    return step, config_lib.flatten(config_lib.with_defaults(saved["config"]))


def _checkpoint_metadata(workdir: str, step: int | None = None) -> tuple[int | None, dict]:
    """(step, metadata) of `workdir`'s checkpoint `step` (None: the latest; ({}) where there is none),
    read without restoring any array. CheckpointError where the folder or that step cannot be read."""
    from motion_ddpm_jax import checkpoint

    reader = checkpoint.Checkpointer(workdir, read_only=True)
    try:
        step = reader.latest_step() if step is None else step
        return step, (reader.restore_metadata(step) if step is not None else {})
    finally:
        reader.close()


def _resolved(path: str) -> str:
    return str(Path(path).resolve()) if path else ""


# What a resume without --config takes from its latest checkpoint rather than from run.json: the fields
# a resume may change (train.RESUMABLE_CHANGES, but for distributed.*, which belongs to the machine).
_LATEST = ("train.", "sample.", "eval.", "data.root", "data.raw_root")


def _latest_settings(config, workdir: str, overrides: dict, note=_say):
    """A run resumed without --config goes on as its latest checkpoint trained: with the train.*, sample.*,
    eval.* and data paths that checkpoint's config holds (an earlier resume may have changed them, e.g. a
    longer train.num_steps or a moved data.root, which run.json, written at the start, does not know),
    but for those given on the command line. Unchanged where no checkpoint can be read (training says
    why)."""
    from motion_ddpm_jax import checkpoint
    from motion_ddpm_jax import config as config_lib

    try:
        step, saved = _checkpoint_metadata(workdir)
    except checkpoint.CheckpointError:
        return config
    if not isinstance(saved.get("config"), dict):
        return config
    latest = config_lib.flatten(config_lib.with_defaults(saved["config"]))
    trained_root = saved.get("data_root")  # absolute, as resolved where that run trained
    here = Path(str(latest["data.root"])).is_dir()
    if isinstance(trained_root, str) and not here and Path(trained_root).is_dir():  # as eval finds it
        latest["data.root"] = trained_root
    current = config_lib.flatten(config)
    changed = {}
    for name, value in latest.items():
        if not name.startswith(_LATEST) or name in overrides or name not in current:
            continue
        if name in ("data.root", "data.raw_root"):
            if isinstance(value, str) and _resolved(value) != _resolved(current[name]):
                changed[name] = value
        elif _comparable(value) != _comparable(current[name]):
            changed[name] = tuple(value) if isinstance(current[name], tuple) else value
    for name, value in changed.items():
        section, field = name.split(".", 1)
        config[section][field] = value
    if changed:
        shown = ", ".join(f"{name}={value!r}" for name, value in changed.items())
        note(f"config: as the latest checkpoint (step {step}) trained, {shown}")
    return config


def _comparable(value):
    """A config value as JSON gives it back (a tuple is a list there)."""
    return list(value) if isinstance(value, tuple) else value


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
    # A caption span makes a clip of its own (`id#from-to`): the counts exceed the split files' ids.
    spans = {split.name: sum("#" in clip_id for clip_id in split.ids) for split in loaded}
    if any(spans.values()):
        shown = ", ".join(f"{count} {name}" for name, count in spans.items() if count)
        lines.append(
            f"of these, clips of a caption's time span (id#from-to: each span a clip of its own, besides "
            f"its whole recording where other captions describe that): {shown}"
        )
    return counts, "\n".join(line for line in lines if line)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a one-line message for an override of a config field that does not exist
    (ml_collections raises AttributeError / KeyError there, not a flags error, which absl would print as a
    traceback)."""
    try:
        if _DEFINE_ERROR is not None:
            raise _DEFINE_ERROR
        return app.parse_flags_with_usage(argv)
    except SyntaxError as error:
        sys.exit(
            f"launch.py: --config {error.filename}, line {error.lineno}: {error.msg} (a Python syntax error)"
        )
    except ConfigSourceError as error:
        sys.exit(f"launch.py: {error}")
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        message = " ".join(str(error).replace("\\n", " ").replace("\\", "").replace("'", "").split())
        file = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
        if file is None and "--config" in argv[:-1]:
            file = argv[argv.index("--config") + 1]
        if "has no attribute get_config" in message:
            sys.exit(f"launch.py: --config {file} defines no get_config() (it returns the ConfigDict)")
        # ml_collections names the last part alone (`"LR"`, `txt Did you mean "text" instead of "txt"?`,
        # a section's with its quotes unbalanced once cleaned): the override, in full, and the field meant
        if isinstance(error, (AttributeError, KeyError)) and (unknown := _unknown_override(argv)):
            sys.exit(f"launch.py: {unknown}")
        if isinstance(error, KeyError):  # a section of the config that does not exist
            sections = ", ".join(base_sections())
            message = f"no config section or field {message.strip(chr(34))!r}; the sections are {sections}"
        sys.exit(f"launch.py: a --config override could not be applied: {message}")


def _unknown_override(argv: list[str]) -> str | None:
    """The first --config.<name>=... of `argv` that names no field of the base config, with the field
    probably meant: one of the same name but for case (`optim.LR`), else the closest name; None where
    each names a field."""
    from motion_ddpm_jax.config import base_config, field_meant, flatten

    known = list(flatten(base_config()))
    for arg in argv[1:]:
        if not arg.startswith("--config."):
            continue
        name = arg.removeprefix("--config.").split("=", 1)[0]
        if name in known:
            continue
        meant = field_meant(name, known)
        hint = (
            f"did you mean --config.{meant}?" if meant else f"the sections are {', '.join(base_sections())}"
        )
        return f"--config.{name} names no config field ({hint}); the fields are motion_ddpm_jax/config.py's"
    return None


def base_sections() -> list[str]:
    from motion_ddpm_jax.config import base_config

    return sorted(key for key, value in base_config().items() if hasattr(value, "items"))


if __name__ == "__main__":
    from motion_ddpm_jax import host_malloc

    host_malloc.tune()  # before jax starts its threads: see motion_ddpm_jax/host_malloc.py
    app.run(main, flags_parser=parse_flags)
