"""KIT-ML in the MotionDiffuse layout (251 features: the T2M code's 21 KIT joints, 12.5 fps), MotionDiffuse's
model sizes and diffusion.

Not MotionDiffuse's text encoder: captions go through the base config's word tokenizer learned from the
training captions (not frozen CLIP), dropped for 10% of samples (classifier-free guidance); see
motion_ddpm_jax/config.py's docstring for every other difference from the original trainer.

Point data.root at the folder holding new_joint_vecs/, texts/, Mean.npy, Std.npy and the split files
(the T2M code's KIT-ML release). MotionDiffuse trains on KIT-ML exactly as on HumanML3D but for the data:
joints_num 21, dim_pose 251, 12.5 fps, clips of 24 <= T < 200 frames (40 for HumanML3D), windows of 196
(mingyuan-zhang/MotionDiffuse text2motion/tools/train.py and datasets/dataset.py).

Where this differs from MotionDiffuse's KIT-ML training, besides the tokenizer: as configs/humanml3d.py
says for HumanML3D (Mean.npy / Std.npy as they are, without MotionDiffuse's feat_bias = 25 on the root
and foot-contact features 0:4 and 247:251; the base config's optimisation; this project's metrics, not
the T2M evaluator's). `--mode sample` and `--mode eval` decode the 251 features to KIT-ML's 21 joints
(`motion_ddpm_jax/humanml3d.py`: the MMM joints, in millimetres; the figure is mirrored with respect to
HumanML3D's, its left joints at -x); eval's jitter in mm/s^2 and mm/s^3, wrist and ankle/midfoot/foot
speeds in mm/s, diversity in mm. KIT-ML's captions cover whole clips (`#0.0#0.0`), so its 12.5 fps is
taken as given.
"""

from motion_ddpm_jax.config import base_config, sized


def get_config(size: str = ""):
    """`--config configs/kit.py`: MotionDiffuse's sizes. `--config configs/kit.py:small`: the
    demo's small model (`config.small_model`), to check a KIT-ML folder and the pipeline on a CPU."""
    config = base_config()
    config.data.source = "prepared"
    config.data.root = "data/KIT-ML"
    config.data.representation = "humanml3d"
    config.data.fps = 12.5
    config.data.max_motion_length = 196
    config.data.min_motion_length = 24
    config.data.max_clip_length = 200
    config.data.std_floor = 1e-6  # only against a zero std (the base 1e-2 is meant for centimetres)
    config.loss.use_velocity_loss = False
    config.loss.use_acceleration_loss = False
    config.loss.use_geometric_loss = False  # no skeleton offsets travel with the 251-feature layout
    return sized(config, size, "configs/kit.py")
