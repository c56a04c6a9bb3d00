"""The base configuration alone (every default): what `launch.py --mode sample|eval` starts from when no
--config is given. The model, data statistics and tokenizer then come from the checkpoint."""

from motion_ddpm_jax.config import base_config


def get_config():
    return base_config()
