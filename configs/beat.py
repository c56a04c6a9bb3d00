"""BEAT, 264 position features (88 joints incl. end sites) at 60 fps, the original trainer's settings.

Prepare once: python launch.py --mode prepare --config configs/beat.py --config.data.raw_root=/path/to/beat
"""

from motion_ddpm_jax.config import base_config, sized


def get_config(size: str = ""):
    """`--config configs/beat.py`: the original trainer's sizes. `--config configs/beat.py:small`: the demo's
    small model (`config.small_model`), to check your recordings and the pipeline on a CPU first."""
    config = base_config()
    config.data.source = "beat"
    config.data.raw_root = "data/beat"
    config.data.root = "data/prepared/beat_positions_60fps"
    config.data.representation = "positions"
    config.data.fps = 60.0
    config.data.max_motion_length = 360
    return sized(config, size, "configs/beat.py")
