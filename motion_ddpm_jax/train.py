"""Training: the optax chain, parameter EMA, the train state, and the train step.

The optimizer is `clip_by_global_norm(clip_norm)` then AdamW under a warmup-cosine schedule, wrapped
in `optax.apply_if_finite` so a step with non-finite gradients changes nothing and is counted. The EMA
of the parameters is `optax.ema` kept beside the optimizer and fed the *new parameters* after each
applied update (never placed in the gradient chain, where it would smooth the updates instead).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

# optax.apply_if_finite applies an update anyway after this many consecutive non-finite steps; we never
# want that (the host loop stops the run long before), so the limit is out of reach.
_NEVER_APPLY_NONFINITE = 2**30


def warmup_steps(optim_config, steps_per_epoch: int) -> int:
    """optim.warmup_steps, or min(500, steps per epoch) when it is -1 (the original's rule)."""
    if optim_config.warmup_steps >= 0:
        return int(optim_config.warmup_steps)
    return int(min(500, max(steps_per_epoch, 1)))


def learning_rate_schedule(optim_config, total_steps: int, warmup: int) -> optax.Schedule:
    """Linear from warmup_start_factor * lr to lr over `warmup` steps, then cosine to min_lr at total_steps.

    Equals the original's torch SequentialLR(LinearLR, CosineAnnealingLR(eta_min=min_lr)) stepped per
    iteration (REFERENCE.md); after total_steps it stays at min_lr.
    """
    if total_steps < 1:
        raise ValueError(
            f"the run has {total_steps} training steps; train.num_steps or num_epochs must give >= 1"
        )
    warmup = min(warmup, total_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=optim_config.warmup_start_factor * optim_config.lr,
        peak_value=optim_config.lr,
        warmup_steps=warmup,
        decay_steps=total_steps,
        end_value=optim_config.min_lr,
    )


def decay_mask(params) -> Any:
    """True where AdamW decays: kernels and embedding tables (ndim >= 2), not biases or norm scales."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(optim_config, schedule: optax.Schedule) -> optax.GradientTransformation:
    """clip_by_global_norm then AdamW with `schedule`, skipping (and counting) non-finite steps."""
    chain = optax.chain(
        optax.clip_by_global_norm(optim_config.clip_norm),
        optax.adamw(
            learning_rate=schedule,
            b1=optim_config.b1,
            b2=optim_config.b2,
            eps=optim_config.eps,
            weight_decay=optim_config.weight_decay,
            mask=decay_mask,
        ),
    )
    return optax.apply_if_finite(chain, max_consecutive_errors=_NEVER_APPLY_NONFINITE)


def make_ema(optim_config) -> optax.GradientTransformation:
    """The parameter EMA. The decay is a float32 array: with a Python float, optax's debiasing term is
    computed in float32 against a float64 update and the EMA comes out about 1.7e-4 (relative) low."""
    return optax.ema(decay=jnp.asarray(optim_config.ema_decay, jnp.float32), debias=True)


def ema_params(ema_state: optax.EmaState, optim_config) -> Any:
    """The debiased EMA of the parameters (what sampling uses), from the EMA's state."""
    decay = jnp.asarray(optim_config.ema_decay, jnp.float32)
    return optax.tree.bias_correction(ema_state.ema, decay, ema_state.count)


def nonfinite_counts(opt_state) -> tuple[jax.Array, jax.Array]:
    """(consecutive, total) non-finite steps skipped so far, from the optimizer's state."""
    return opt_state.notfinite_count, opt_state.total_notfinite


def last_step_was_finite(opt_state) -> jax.Array:
    return opt_state.last_finite


@struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly: step, parameters, optimizer and EMA states, RNG key data.

    rng holds raw key data (uint32[2]) so that the state checkpoints as plain arrays.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_state: Any
    rng: jax.Array


def create_train_state(params, optimizer: optax.GradientTransformation, ema, seed: int) -> TrainState:
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        ema_state=ema.init(params),
        rng=jax.random.key_data(jax.random.key(seed)),
    )


def apply_gradients(
    state: TrainState, grads, optimizer: optax.GradientTransformation, ema, ema_every: int = 1
) -> TrainState:
    """One optimizer step; the EMA is fed the new parameters every `ema_every` steps, and not at all when
    the step was skipped for non-finite gradients (then nothing changes but the step and the counts)."""
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    _, new_ema_state = ema.update(params, state.ema_state)
    feed = last_step_was_finite(opt_state) & ((state.step + 1) % ema_every == 0)
    ema_state = jax.tree.map(lambda new, old: jnp.where(feed, new, old), new_ema_state, state.ema_state)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_state=ema_state)


def global_norm(tree) -> jax.Array:
    return optax.tree.norm(tree).astype(jnp.float32)


def learning_rate_at(schedule: optax.Schedule, step) -> np.ndarray:
    """The schedule's value at `step` as float32 (for logs and tests)."""
    return np.asarray(schedule(step), np.float32)
