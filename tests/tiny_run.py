"""Command-line overrides of configs/demo.py that make a model small enough to train in seconds, for the
tests that run launch.py as a user does (resume, workdir ownership)."""

TINY_MODEL = [
    "--config.model.latent_dim=16",
    "--config.model.num_layers=1",
    "--config.model.ff_size=32",
    "--config.model.num_heads=2",
    "--config.model.text_latent_dim=8",
    "--config.model.text_ff_size=16",
    "--config.model.text_num_heads=2",
    "--config.data.max_motion_length=16",
    "--config.diffusion.steps=50",
    "--config.train.batch_size=4",
]
