"""HumanML3D in the MotionDiffuse layout (263 features, 20 fps), MotionDiffuse's model sizes and diffusion.

Not MotionDiffuse's text encoder: captions go through the base config's word tokenizer learned from the
training captions (not frozen CLIP), dropped for 10% of samples (classifier-free guidance); see
motion_ddpm_jax/config.py's docstring for every other difference from the original trainer.

Point data.root at the folder holding new_joint_vecs/, texts/, Mean.npy, Std.npy and the split files.
MotionDiffuse trains on the reconstruction term alone; its clips are 40 <= T < 200 frames, windows 196.
"""

from motion_ddpm_jax.config import base_config


def get_config():
    config = base_config()
    config.data.source = "prepared"
    config.data.root = "data/HumanML3D"
    config.data.representation = "humanml3d"
    config.data.fps = 20.0
    config.data.max_motion_length = 196
    config.data.min_motion_length = 40
    config.data.max_clip_length = 200
    config.loss.use_velocity_loss = False
    config.loss.use_acceleration_loss = False
    config.loss.use_geometric_loss = False  # no skeleton travels with the 263-feature layout
    return config
