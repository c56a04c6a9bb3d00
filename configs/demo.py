"""Tiny CPU-sized demo on BEAT's skeleton: runs in seconds on 2 cores."""

from motion_ddpm_jax.config import base_config


def get_config():
    config = base_config()
    config.data.fps = 30.0
    config.data.max_motion_length = 60
    config.diffusion.steps = 100
    return config
