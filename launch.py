"""Entry point: python launch.py --config configs/<name>.py [--config.a.b=value] [--workdir DIR] [--mode M].

Modes: `smoke` (a quick end-to-end check of the pure core). Training, sampling, evaluation and data
preparation arrive as their modules land.
"""

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file (configs/*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (checkpoints, logs, samples).")
_MODE = flags.DEFINE_enum("mode", "smoke", ["smoke"], "What to do.")
flags.mark_flags_as_required(["config"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if _MODE.value == "smoke":
        from motion_ddpm_jax import smoke

        smoke.run(_CONFIG.value)


if __name__ == "__main__":
    app.run(main)
