"""HumanML3D in the MotionDiffuse layout (263 features, 20 fps), MotionDiffuse's model sizes and diffusion.

Not MotionDiffuse's text encoder: captions go through the base config's word tokenizer learned from the
training captions (not frozen CLIP), dropped for 10% of samples (classifier-free guidance); see
motion_ddpm_jax/config.py's docstring for every other difference from the original trainer.

Point data.root at the folder holding new_joint_vecs/, texts/, Mean.npy, Std.npy and the split files.
MotionDiffuse trains on the reconstruction term alone; its clips are 40 <= T < 200 frames, windows 196.

Where this differs from MotionDiffuse's HumanML3D training, besides the tokenizer:
- Normalisation: Mean.npy and Std.npy as they are (as MDM does; data.std_floor only guards zeros).
  MotionDiffuse divides the std of the root features (0:4) and of the foot contacts (259:263) by
  feat_bias = 25, which weighs those features 25x in its loss; this does not.
- Optimisation: the base config's (Adam, as MotionDiffuse: optim.weight_decay 0, at 1e-4, warmup then
  cosine to 1e-6, parameter EMA, batch 32 in all, 100 epochs); MotionDiffuse trains at a constant 2e-4
  without EMA, 128 per GPU on 8 GPUs, 50 epochs of 200 passes over the clips.
- Evaluation: `--mode eval` reports this project's metrics, not the T2M evaluator's FID / R-precision /
  MM-Dist / MultiModality: position metrics of the 22 joints decoded from the 263 features
  (`motion_ddpm_jax/humanml3d.py`; jitter in m/s^2 and m/s^3, wrist and ankle/foot speeds in m/s,
  diversity in m, the bone error relative to the training clips' mean bone lengths), and Fréchet
  distances of per-clip statistics of those positions and of its own autoencoder's latents.
  `--mode sample` decodes them the same way for its positions and animation; no BVH.
- Data: caption spans are seconds at 20 fps (`data.fps` must be 20 where a caption has one); captions
  with the same span make one sub-clip holding each of them (MotionDiffuse makes one clip per line).
"""

from motion_ddpm_jax.config import base_config, sized


def get_config(size: str = ""):
    """`--config configs/humanml3d.py`: MotionDiffuse's sizes. `--config configs/humanml3d.py:small`: the
    demo's small model (`config.small_model`), to check a HumanML3D folder and the pipeline on a CPU."""
    config = base_config()
    config.data.source = "prepared"
    config.data.root = "data/HumanML3D"
    config.data.representation = "humanml3d"
    config.data.fps = 20.0
    config.data.max_motion_length = 196
    config.data.min_motion_length = 40
    config.data.max_clip_length = 200
    config.data.std_floor = 1e-6  # in metres: only against a zero std (the base 1e-2 would raise real ones)
    config.loss.use_velocity_loss = False
    config.loss.use_acceleration_loss = False
    config.loss.use_geometric_loss = False  # no skeleton travels with the 263-feature layout
    return sized(config, size, "configs/humanml3d.py")
