"""BEAT as root translation deltas + axis-angle joint rotations (228 features), FK position loss on."""

from motion_ddpm_jax.config import base_config


def get_config():
    config = base_config()
    config.data.source = "beat"
    config.data.raw_root = "data/beat"
    config.data.root = "data/prepared/beat_axis_angle_60fps"
    config.data.representation = "axis_angle"
    return config
