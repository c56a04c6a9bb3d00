"""BEAT as root translation deltas + 6D joint rotations (453 features), FK position loss on.

The 6D layout (`representation.py`: the first two columns of each local rotation matrix) is continuous
where axis-angle jumps by about 2 pi at half turns. A cache and the runs of the axis_angle layout this file
named before (`data/prepared/beat_axis_angle_60fps`, 228 features) keep working with
`--config.data.representation=axis_angle --config.data.root=data/prepared/beat_axis_angle_60fps`."""

from motion_ddpm_jax.config import base_config, sized


def get_config(size: str = ""):
    """`--config configs/beat_rot.py`: the original trainer's sizes. `--config configs/beat_rot.py:small`:
    the demo's small model (`config.small_model`), to check your recordings and the pipeline on a CPU."""
    config = base_config()
    config.data.source = "beat"
    config.data.raw_root = "data/beat"
    config.data.root = "data/prepared/beat_rotation_6d_60fps"
    config.data.representation = "rotation_6d"
    return sized(config, size, "configs/beat_rot.py")
