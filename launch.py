"""Entry point: python launch.py --config configs/<name>.py [--config.a.b=value] [--workdir DIR] [--mode M].

Modes: `smoke` (a quick end-to-end check of the pure core), `prepare` (raw BEAT at data.raw_root ->
the prepared dataset cache at data.root). Training, sampling and evaluation arrive as their modules land.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file (configs/*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (checkpoints, logs, samples).")
_MODE = flags.DEFINE_enum("mode", "smoke", ["smoke", "prepare"], "What to do.")
flags.mark_flags_as_required(["config"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if _MODE.value == "smoke":
        from motion_ddpm_jax import smoke

        smoke.run(_CONFIG.value)
    elif _MODE.value == "prepare":
        from motion_ddpm_jax.data import beat

        try:
            beat.prepare_from_config(_CONFIG.value.data)
        except (ValueError, OSError) as error:  # the readers' and the cache's errors name file and field
            sys.exit(f"launch.py --mode prepare: {error}")


if __name__ == "__main__":
    app.run(main)
