"""BEAT, 264 position features (88 joints incl. end sites) at 60 fps, the original trainer's settings."""

from motion_ddpm_jax.config import base_config


def get_config():
    config = base_config()
    config.data.representation = "positions"
    config.data.fps = 60
    config.data.max_motion_length = 360
    return config
