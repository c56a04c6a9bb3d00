"""motion_ddpm_jax: text-conditioned denoising diffusion models of human motion in JAX/Flax."""

__version__ = "0.1.0"
