"""The base configuration every file in `configs/` starts from: one ConfigDict, every number in it.

Sections: `data`, `diffusion`, `loss` (later issues add `model`, `optim`, `train`, `sample`). The
defaults are the original trainer's (REFERENCE.md): 1000 linear-schedule steps, epsilon prediction,
velocity 0.1, acceleration 0.05, geometric 0.01.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.source = "beat"  # beat (raw BEAT under raw_root) | synthetic (the demo set) | prepared
    config.data.raw_root = ""  # raw BEAT release folder (BVH + TextGrid per recording)
    config.data.root = ""  # the prepared dataset (a cache written by --mode prepare), or a HumanML3D folder
    config.data.representation = "positions"  # positions | axis_angle | humanml3d
    config.data.fps = 60.0
    config.data.max_motion_length = 360  # training window (frames); also the positional table's size
    config.data.min_motion_length = 1  # clips shorter than this are left out of training
    config.data.max_clip_length = (
        0  # HumanML3D layout: clips of this many frames or more are dropped; 0 = keep
    )
    config.data.min_pause_s = 0.5  # sentence clips are cut at silences at least this long
    config.data.min_clip_s = 0.5  # shorter sentence clips are dropped (and counted)
    config.data.val_fraction = 0.1  # of the recordings
    config.data.test_fraction = 0.1
    config.data.split_seed = 0
    config.data.std_floor = 1e-2

    config.diffusion = ml_collections.ConfigDict()
    config.diffusion.steps = 1000
    config.diffusion.schedule = "linear"  # linear | cosine
    config.diffusion.prediction = "epsilon"  # epsilon | x0 | v
    config.diffusion.clip_x0 = 0.0  # 0 = no clipping of the x0 estimate while sampling

    config.loss = ml_collections.ConfigDict()
    config.loss.use_velocity_loss = True
    config.loss.velocity_weight = 0.1
    config.loss.use_acceleration_loss = True
    config.loss.acceleration_weight = 0.05
    config.loss.use_geometric_loss = True
    config.loss.geometric_weight = 0.01
    # Per-example weights of the x0-space terms: auto | none | truncated_snr (see losses.auxiliary_weights).
    config.loss.aux_weighting = "auto"

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 1e-4
    config.optim.min_lr = 1e-6  # the cosine ends here at the last step
    config.optim.warmup_steps = -1  # linear from 0.1 * lr to lr; -1 = min(500, steps per epoch)
    config.optim.warmup_start_factor = 0.1
    config.optim.clip_norm = 0.5  # global gradient norm
    config.optim.weight_decay = 0.0  # AdamW's decay of kernels/embeddings (0 = Adam, as MotionDiffuse)
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.eps = 1e-8
    config.optim.ema_decay = 0.9999
    config.optim.ema_every = 1

    config.model = ml_collections.ConfigDict()  # MotionDiffuse's sizes (REFERENCE.md); see model.py
    config.model.input_feats = 0  # 0 = the data's feature count (264 for BEAT positions)
    config.model.latent_dim = 512
    config.model.num_layers = 8
    config.model.ff_size = 1024
    config.model.num_heads = 8
    config.model.dropout = 0.0
    config.model.text_vocab_size = 0  # 0 = the tokenizer's vocabulary size
    config.model.text_max_length = 77
    config.model.text_latent_dim = 256
    config.model.text_num_layers = 4
    config.model.text_num_heads = 4
    config.model.text_ff_size = 2048
    config.model.attention = "efficient"  # efficient (MotionDiffuse's linear attention) | softmax
    config.model.compute_dtype = "auto"  # auto (bfloat16 on GPU/TPU, float32 on CPU) | bfloat16 | float32
    config.model.remat = False  # recompute each layer in the backward pass (memory for long sequences)
    config.model.cond_drop_prob = 0.1  # per-sample caption dropout for classifier-free guidance

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 32  # global, over all devices and hosts
    config.train.num_epochs = 100
    config.train.num_steps = 0  # > 0 overrides num_epochs
    config.train.log_every = 50
    config.train.save_every_steps = 0  # 0 = off
    config.train.save_every_epochs = 10
    config.train.max_to_keep = 3
    config.train.max_consecutive_nonfinite = 20  # stop when this many steps in a row had non-finite gradients
    return config
