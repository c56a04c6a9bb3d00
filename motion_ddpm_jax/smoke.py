"""A quick end-to-end check of the pure core on BEAT's skeleton: kinematics, features, diffusion, losses.

It makes a few seconds of procedural gesture motion by forward kinematics, encodes it in the
configured representation, noises it, and checks what must hold whatever the model: an oracle
denoiser brings DDIM back to the clean motion, its losses are zero, a wrong prediction's are not,
and the bone lengths of the motion equal the skeleton's. Prints a table; returns the numbers.
"""

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from motion_ddpm_jax import diffusion, kinematics, losses, representation
from motion_ddpm_jax.errors import UserError
from motion_ddpm_jax.skeleton import beat_skeleton


def procedural_motion(skeleton, num_clips: int, num_frames: int, fps: float, seed: int):
    """Smooth random joint rotations, wandering root: (local rotations [N, T, J, 3, 3], root [N, T, 3])."""
    rng = np.random.default_rng(seed)
    time_s = np.arange(num_frames) / fps
    joints = skeleton.num_joints
    axes = rng.normal(size=(num_clips, 1, joints, 3))
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    frequency = rng.uniform(0.3, 1.5, (num_clips, 1, joints, 1))
    phase = rng.uniform(0, 2 * np.pi, (num_clips, 1, joints, 1))
    amplitude = rng.uniform(0.05, 0.6, (num_clips, 1, joints, 1)) * ~skeleton.end_sites[:, None]
    angle = amplitude * np.sin(2 * np.pi * frequency * time_s[None, :, None, None] + phase)
    rotations = kinematics.axis_angle_to_matrix(jnp.asarray(axes * angle, jnp.float32))
    root = np.cumsum(rng.normal(0.0, 0.3, (num_clips, num_frames, 3)), axis=1) + [0.0, 95.0, 0.0]
    return rotations, jnp.asarray(root, jnp.float32)


def run(config: ml_collections.ConfigDict) -> dict[str, float]:
    start = time.perf_counter()
    skeleton = beat_skeleton()
    kind = config.data.representation
    if kind not in losses.REPRESENTATIONS:
        raise UserError(
            f"--mode smoke checks the loss terms on a skeleton's {' or '.join(losses.REPRESENTATIONS)} "
            f"features; data.representation is {kind!r} (set --config.data.representation=positions)"
        )
    frames = int(config.data.max_motion_length)
    rotations, root = procedural_motion(skeleton, 4, frames, config.data.fps, config.seed)
    positions = kinematics.forward_kinematics(rotations, skeleton.offsets, skeleton.parents, root)
    if kind == "positions":
        features = representation.encode_positions(positions, skeleton)
    else:
        features = representation.encode_rotations(rotations, root, skeleton, kind)
    mean = jnp.mean(features, axis=(0, 1))
    std = jnp.maximum(jnp.std(features, axis=(0, 1)), 1e-2)
    x0 = (features - mean) / std
    mask = jnp.arange(frames)[None] < jnp.array([frames, frames, frames // 2, frames // 3])[:, None]

    schedule = diffusion.make_schedule(config.diffusion.schedule, config.diffusion.steps)
    prediction = config.diffusion.prediction
    rng = jax.random.key(config.seed)
    # float32 and int32 draws, as training's: jax_enable_x64's 64-bit defaults give other numbers per key.
    noise = jax.random.normal(jax.random.fold_in(rng, 0), x0.shape, jnp.float32)
    t = jax.random.randint(jax.random.fold_in(rng, 1), (x0.shape[0],), 0, schedule.num_steps, jnp.int32)
    x_t = diffusion.q_sample(schedule, x0, t, noise)
    geometry = losses.Geometry(mean=mean, std=std, skeleton=skeleton, representation=kind)

    def loss_of(output):
        return losses.compute_losses(
            schedule, output, x_t, x0, noise, t, mask, config.loss, prediction, geometry
        )

    perfect = diffusion.training_target(schedule, x0, noise, t, prediction)
    wrong = perfect + 0.1 * jax.random.normal(jax.random.fold_in(rng, 2), x0.shape, jnp.float32)
    perfect_losses, wrong_losses = loss_of(perfect), loss_of(wrong)

    def oracle(x, step_t):
        return diffusion.training_target(
            schedule, x0, diffusion.predict_eps(schedule, x, step_t, x0, "x0"), step_t, prediction
        )

    x_T = jax.random.normal(jax.random.fold_in(rng, 3), x0.shape, jnp.float32)
    sample = jax.jit(
        lambda x, r: diffusion.ddim_sample_loop(
            schedule, oracle, x, r, prediction, min(50, schedule.num_steps)
        )
    )(x_T, jax.random.fold_in(rng, 4))
    decoded = representation.decode(sample * std + mean, skeleton, kind)
    bone_error = jnp.abs(kinematics.bone_lengths(decoded, skeleton.parents) - skeleton.bone_lengths())

    results = {
        "features per frame": float(x0.shape[-1]),
        "oracle loss (should be ~0)": float(perfect_losses["loss"]),
        "perturbed loss (should be > 0)": float(wrong_losses["loss"]),
        **{f"perturbed {name}": float(value) for name, value in wrong_losses.items() if name != "loss"},
        "DDIM-50 oracle max |x0 error| (std units)": float(jnp.max(jnp.abs(sample - x0))),
        "max bone length error after decode (cm)": float(jnp.max(bone_error)),
        "seconds": time.perf_counter() - start,
    }
    width = max(len(name) for name in results)
    print(
        f"core smoke: {kind} features on the BEAT skeleton, {config.diffusion.schedule} schedule, "
        f"{schedule.num_steps} steps, {prediction} prediction"
    )
    for name, value in results.items():
        print(f"  {name:<{width}}  {value:.6g}")
    return results
