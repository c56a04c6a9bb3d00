"""BEAT as root translation deltas + axis-angle joint rotations (228 features), FK position loss on."""

from motion_ddpm_jax.config import base_config, sized


def get_config(size: str = ""):
    """`--config configs/beat_rot.py`: the original trainer's sizes. `--config configs/beat_rot.py:small`:
    the demo's small model (`config.small_model`), to check your recordings and the pipeline on a CPU."""
    config = base_config()
    config.data.source = "beat"
    config.data.raw_root = "data/beat"
    config.data.root = "data/prepared/beat_axis_angle_60fps"
    config.data.representation = "axis_angle"
    return sized(config, size, "configs/beat_rot.py")
