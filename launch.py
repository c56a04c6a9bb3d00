"""Entry point: python launch.py --config configs/<name>.py [--config.a.b=value] [--workdir DIR] [--mode M].

Modes: `train` (the default: train, resuming from the workdir's latest checkpoint), `prepare` (raw BEAT
at data.raw_root -> the prepared dataset cache at data.root), `smoke` (a quick end-to-end check of the
pure core). The workdir defaults to runs/<config file name>.
"""

import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (checkpoints, logs); default runs/<config name>.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "prepare", "smoke"], "What to do.")
flags.mark_flags_as_required(["config"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    config_name = Path(config_flags.get_config_filename(flags.FLAGS["config"])).stem
    workdir = _WORKDIR.value or str(Path("runs") / config_name)
    try:
        if _MODE.value == "smoke":
            from motion_ddpm_jax import smoke

            smoke.run(config)
        elif _MODE.value == "prepare":
            from motion_ddpm_jax.data import beat

            beat.prepare_from_config(config.data)
        else:
            from motion_ddpm_jax import train

            train.run(config, workdir)
    except (ValueError, OSError, FloatingPointError) as error:  # user-facing errors name the file or field
        sys.exit(f"launch.py --mode {_MODE.value}: {error}")


if __name__ == "__main__":
    app.run(main)
