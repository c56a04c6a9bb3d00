"""Training: the optax chain, parameter EMA, the train state, and the train step.

The optimizer is an optax chain, `clip_by_global_norm(clip_norm)` then AdamW under a warmup-cosine
schedule, wrapped in `skip_nonfinite` so a step with non-finite gradients changes nothing and is counted
(optax.apply_if_finite's state and counts). The EMA of the parameters is `optax.ema` kept beside the
optimizer and fed the *new parameters* after each applied update (never placed in the gradient chain,
where it would smooth the updates instead). `apply_gradients` runs the optimizer's update, the
parameter update and the EMA's in one conditional on the gradients being finite.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import math
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from motion_ddpm_jax import checkpoint, diffusion, distributed, files, humanml3d, losses, provenance, text
from motion_ddpm_jax import config as config_lib
from motion_ddpm_jax import model as model_lib
from motion_ddpm_jax.data import beat, motion_text, pipeline
from motion_ddpm_jax.errors import UserError


def warmup_steps(optim_config, steps_per_epoch: int) -> int:
    """optim.warmup_steps, or min(500, steps per epoch) when it is -1 (the original's rule)."""
    if optim_config.warmup_steps >= 0:
        return int(optim_config.warmup_steps)
    return int(min(500, max(steps_per_epoch, 1)))


def applied_warmup(warmup: int, total_steps: int) -> int:
    """The warmup a run of `total_steps` gets: `warmup`, or total_steps - 1 where the run is no longer (its
    updates climb to lr; schedule(total_steps), never used by an update, is min_lr)."""
    return max(min(warmup, total_steps - 1), 0)


def learning_rate_schedule(optim_config, total_steps: int, warmup: int) -> optax.Schedule:
    """Linear from warmup_start_factor * lr to lr over `warmup` steps, then cosine to min_lr at total_steps.

    Equals the original trainer's torch SequentialLR(LinearLR, CosineAnnealingLR(eta_min=min_lr)) stepped
    per iteration; after total_steps it stays at min_lr.
    """
    if total_steps < 1:
        raise UserError(
            f"the run has {total_steps} training steps; train.num_steps or train.num_epochs must give >= 1"
        )
    warmup = applied_warmup(warmup, total_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=optim_config.warmup_start_factor * optim_config.lr,
        peak_value=optim_config.lr,
        warmup_steps=warmup,
        decay_steps=total_steps,
        end_value=optim_config.min_lr,
    )


def warmup_note(warmup: int, total_steps: int) -> str:
    """The warmup in words, as the schedule applies it (a run shorter than optim.warmup_steps gets less)."""
    applied = applied_warmup(warmup, total_steps)
    if applied == warmup:
        return f"warmup {warmup} steps"
    return f"warmup {applied} steps (the run is shorter than its warmup of {warmup} steps)"


def decay_mask(params) -> Any:
    """True where AdamW decays: kernels and embedding tables (ndim >= 2), not biases or norm scales."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformationExtraArgs:
    """Scales the updates by min(1, max_norm / ||g||), ||g|| their global L2 norm: optax's
    `clip_by_global_norm`, spelled as one multiplication by a scalar. `update` takes the norm as the
    extra argument `global_norm` where the caller has it already (`apply_gradients`), else computes it.

    Why not optax's own: it divides every gradient by the norm, and XLA (which will not compute a
    division twice) then writes the clipped gradients out in a pass of their own before Adam's two
    moments read them; a multiplication it fuses into both. That alone made the optimizer's update of
    the model's 87M parameters 1.13x faster (benchmarks/RESULTS.md, session 11). The values differ
    from optax's in the last bit (g * (c / n) against (g / n) * c).
    """

    def update(updates, state, params=None, *, global_norm=None, **extra_args):
        del params, extra_args
        norm = optax.tree.norm(updates) if global_norm is None else global_norm
        factor = jnp.where(norm < max_norm, 1.0, max_norm / norm)
        return jax.tree.map(lambda g: g * factor.astype(g.dtype), updates), state

    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update)


def gradients_are_finite(grads) -> jax.Array:
    """Whether the global norm of `grads` is finite: no NaN or inf in any gradient, and a norm within
    float32's range (below ~1.8e19; beyond it, clipping would scale the gradients to 0 anyway). One
    reduction over the gradients, the one that clipping and the logged `grad_norm` take too."""
    return _norm_and_finiteness(grads)[1]


def _norm_and_finiteness(grads) -> tuple[jax.Array, jax.Array]:
    norm = optax.tree.norm(grads)
    return norm, jnp.isfinite(norm)


class SkipNonfinite(NamedTuple):
    """An optax GradientTransformation (`init`, `update`) that applies `inner` where
    `gradients_are_finite`, and otherwise returns zero updates and leaves `inner`'s state as it was.
    Its state is optax.apply_if_finite's (`optax.ApplyIfFiniteState`: the consecutive and total counts
    of skipped steps, whether the last step was finite, and `inner`'s state); unlike apply_if_finite it
    never gives up and applies a non-finite update (the host loop stops a run that keeps producing
    them). `inner` is kept for `apply_gradients`."""

    init: Callable
    update: Callable
    inner: optax.GradientTransformation


def _counted(state: optax.ApplyIfFiniteState, finite: jax.Array, inner_state) -> optax.ApplyIfFiniteState:
    one = jnp.ones([], jnp.int32)
    return optax.ApplyIfFiniteState(
        notfinite_count=jnp.where(finite, 0, state.notfinite_count + one),
        last_finite=finite,
        total_notfinite=jnp.where(finite, state.total_notfinite, state.total_notfinite + one),
        inner_state=inner_state,
    )


def skip_nonfinite(inner: optax.GradientTransformation) -> SkipNonfinite:
    """`inner` applied only to finite gradients (`SkipNonfinite`). `update` computes the global norm
    once and passes it to `inner` as the extra argument `global_norm` (`clip_by_global_norm` takes it;
    transformations without extra arguments are not given it)."""
    inner = optax.with_extra_args_support(inner)

    def init(params):
        return optax.ApplyIfFiniteState(
            notfinite_count=jnp.zeros([], jnp.int32),
            last_finite=jnp.array(True),
            total_notfinite=jnp.zeros([], jnp.int32),
            inner_state=inner.init(params),
        )

    def update(updates, state, params=None, **extra_args):
        norm, finite = _norm_and_finiteness(updates)
        new_updates, inner_state = jax.lax.cond(
            finite,
            lambda: inner.update(updates, state.inner_state, params, global_norm=norm, **extra_args),
            lambda: (jax.tree.map(jnp.zeros_like, updates), state.inner_state),
        )
        return new_updates, _counted(state, finite, inner_state)

    return SkipNonfinite(init, update, inner)


def make_adamw(optim_config, schedule: optax.Schedule) -> optax.GradientTransformation:
    """optax.adamw with the config's betas, eps and weight decay (of kernels and embeddings only)."""
    return optax.adamw(
        learning_rate=schedule,
        b1=optim_config.b1,
        b2=optim_config.b2,
        eps=optim_config.eps,
        weight_decay=optim_config.weight_decay,
        mask=decay_mask,
    )


def make_optimizer(optim_config, schedule: optax.Schedule) -> SkipNonfinite:
    """clip_by_global_norm then AdamW with `schedule`, skipping (and counting) non-finite steps."""
    chain = optax.chain(clip_by_global_norm(optim_config.clip_norm), make_adamw(optim_config, schedule))
    return skip_nonfinite(chain)


def make_ema(optim_config) -> optax.GradientTransformation:
    """The parameter EMA. The decay is a float32 array: with a Python float, optax's debiasing term is
    computed in float32 against a float64 update and the EMA comes out about 1.7e-4 (relative) low."""
    return optax.ema(decay=jnp.asarray(optim_config.ema_decay, jnp.float32), debias=True)


def ema_params(ema_state: optax.EmaState, optim_config, params: Any) -> Any:
    """The debiased EMA of the parameters (what sampling uses), from the EMA's state; `params` (the
    current parameters) where the average has not been fed yet (its count is 0: a checkpoint saved
    before the first step, on a SIGTERM during the set-up, or while every step so far was skipped or
    came before the first of `optim.ema_every`), where the debiasing would divide by 1 - decay ** 0 = 0.
    One compiled program (per parameter tree), not an eager division and selection per leaf, each of
    which compiled on its first call (1.2 s of a tiny run's start-up on the CPU). Compiled, the division
    rounds once (as numpy's float32 division); eager, XLA had multiplied by the reciprocal: the EMA
    parameters written since session 34 differ from before in the last bit of some values (123 of 270
    leaves in a check over 5 decays and 9 counts), the training state (and so a resume) not at all."""
    return _ema_params(ema_state, params, float(optim_config.ema_decay))


@functools.partial(jax.jit, static_argnums=2)
def _ema_params(ema_state: optax.EmaState, params: Any, decay: float) -> Any:
    decay = jnp.asarray(decay, jnp.float32)
    # 1 - decay ** count, the weight the average has gathered, as -expm1(count * log1p(-(1 - decay))): in
    # float32 1 - decay ** count cancels near decay = 1 (0.9999: up to 1e-4 relative in the first steps,
    # which optax.tree.bias_correction keeps); 1 - decay itself is exact in float32 for decay >= 0.5.
    gathered = -jnp.expm1(ema_state.count.astype(jnp.float32) * jnp.log1p(-(1.0 - decay)))
    debiased = jax.tree.map(lambda average: average / gathered.astype(average.dtype), ema_state.ema)
    fed = ema_state.count > 0
    return jax.tree.map(lambda average, current: jnp.where(fed, average, current), debiased, params)


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
    state: TrainState, grads, optimizer: SkipNonfinite, ema, ema_every: int = 1
) -> TrainState:
    """One optimizer step; the EMA is fed the new parameters every `ema_every` steps, and not at all when
    the step was skipped for non-finite gradients (then nothing changes but the step and the counts).

    The same values as `optimizer.update`, `optax.apply_updates` and `ema.update` applied one after the
    other, up to the last bit (XLA may contract a multiply-add into a fused one differently): the three
    run inside one `lax.cond` on the gradients being finite, so that XLA fuses each parameter's Adam
    moments, its update and its EMA into four passes over memory, with no update array written out in
    between. With `clip_by_global_norm`'s multiplication and one norm for clipping and the finiteness
    check, the update of the model's 87M parameters takes 0.63-0.66 of the time it takes as optax
    spells it (158-182 ms against 250-274 ms in two runs of `benchmarks/bench_optimizer.py`; the
    twin's torch AdamW: 254-284 ms), and the bf16 train step ran 1.03-1.06x faster (`bench_variants.py
    --variants current,optimizer=optax`; benchmarks/RESULTS.md, session 11).
    """
    if not isinstance(optimizer, SkipNonfinite):
        kind = type(optimizer).__name__
        raise TypeError(f"apply_gradients needs make_optimizer's optimizer (a SkipNonfinite), got a {kind}")
    feed = (state.step + 1) % ema_every == 0
    norm, finite = _norm_and_finiteness(grads)  # one pass over the gradients: the check and the clipping

    def apply():
        inner_state = state.opt_state.inner_state
        updates, inner_state = optimizer.inner.update(grads, inner_state, state.params, global_norm=norm)
        params = optax.apply_updates(state.params, updates)
        _, fed = ema.update(params, state.ema_state)
        ema_state = jax.tree.map(lambda new, old: jnp.where(feed, new, old), fed, state.ema_state)
        return params, inner_state, ema_state

    params, inner_state, ema_state = jax.lax.cond(
        finite, apply, lambda: (state.params, state.opt_state.inner_state, state.ema_state)
    )
    opt_state = _counted(state.opt_state, finite, inner_state)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_state=ema_state)


def replicate(tree, devices: int):
    """A leading device axis of size `devices` on every leaf (host copies; pmap places them)."""
    return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (devices, *np.shape(x))), tree)


def window_means(window: list[dict[str, Any]]) -> dict[str, float]:
    """A log row's loss terms and grad_norm: the means over the steps of `window` (the step metrics since
    the row before, as the step returned them: fetched here, at the row, not at every step) of their
    finite values, less those of steps skipped for non-finite gradients (`skipped_steps` counts them;
    their loss terms may be finite); NaN where no step of the window has one. `lr` is the window's last
    step's (the schedule's rate, not a mean).
    MotionDiffuse's trainer logs such means too: one step's values swing with its batch and noise levels
    (the demo's loss_mot_rec 0.017-0.077 between rows 200 steps apart, late in a run)."""
    rows = _host_rows(window)
    out = {}
    for name, last in rows[-1].items():
        if name in _COUNTS:
            continue
        values = np.array([_step_value(row, name) for row in rows if name in row], np.float64)
        finite = values[np.isfinite(values)]
        out[name] = float(last) if name == "lr" else float(finite.mean()) if finite.size else math.nan
    out["skipped_steps"] = float(rows[-1]["nonfinite_total"])  # the run's count so far, at the row's step
    return out


_COUNTS = ("skipped", "nonfinite_total")  # step metrics that are counts, not means of a row


def _host_rows(window: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The window's step metrics on the host, device 0's replica of each, in one transfer."""
    return [first_replica(metrics) for metrics in jax.device_get(window)]


def window_record(window: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    """The step values of a log row not yet written, for a checkpoint's metadata (`log_window`): a run
    stopped between two rows and resumed writes the row an uninterrupted run writes, to the bit (the same
    float32 values, the same float64 mean). Values left out of the means (non-finite ones, and those of
    a skipped step) as None."""
    rows = _host_rows(window)
    names = [name for name in (rows[0] if rows else {}) if name not in (*_COUNTS, "lr")]
    return {
        name: [value if math.isfinite(value := _step_value(row, name)) else None for row in rows]
        for name in names
    }


def _step_value(row: dict[str, Any], name: str) -> float:
    """A step's value of `name` for its row's mean: NaN (left out) where the step was skipped for
    non-finite gradients, whose loss terms may well be finite (gradients alone overflowing float32); a
    restored entry (`restored_window`) has no `skipped`: its record holds such a step's values as None."""
    return math.nan if float(row.get("skipped", 0.0)) > 0 else float(row[name])


def restored_window(saved: dict[str, Any] | None) -> list[dict[str, np.ndarray]]:
    """`window_record`'s values back as window entries (one-replica arrays, as `window_means` reads them);
    empty for a checkpoint at a row, or of a version that logged one step's values."""
    record = (saved or {}).get("log_window") or {}
    count = min((len(values) for values in record.values()), default=0)
    return [
        {name: np.array([np.nan if v[i] is None else v[i]], np.float64) for name, v in record.items()}
        for i in range(count)
    ]


def earlier_rows_note(saved: dict[str, Any] | None, first: int, metrics: Path) -> str | None:
    """The note for a resumed run whose checkpoint an earlier version wrote (no `log_window` in its
    metadata: that version logged one step's values per row): its metrics.jsonl rows so far hold one
    step's loss terms and grad_norm each, the rows to come means over several steps, and nothing in the
    file says which row is which (a curve across the two reads as suddenly smoother). None for a new run,
    a checkpoint of this version, or a file with no row."""
    if not saved or "log_window" in saved or not metrics.is_file():
        return None
    steps = []
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            steps.append(int(json.loads(line)["step"]))
        except (ValueError, KeyError, TypeError):
            continue
    if not steps:
        return None
    last = max(steps)
    lost = (
        f" (the first over the steps after {first} only: the earlier version's checkpoint kept no values "
        f"of steps {last + 1}-{first})"
        if first > last
        else ""
    )
    return (
        f"{metrics}: its rows up to step {last} were written by an earlier version and hold one step's loss "
        f"terms and grad_norm each; the rows from here on hold their means over the steps since the row "
        f"before{lost}"
    )


def first_replica(tree):
    """Host (numpy) copy of device 0's replica of every leaf of a pmapped tree, without compiling an
    indexing program per leaf (as `x[0]` on a device array would)."""

    def one(x):
        if isinstance(x, jax.Array):
            return np.asarray(x.addressable_shards[0].data).reshape(x.shape[1:])
        return np.asarray(x)[0]

    return jax.tree.map(one, tree)


def global_norm(tree) -> jax.Array:
    return optax.tree.norm(tree).astype(jnp.float32)


def learning_rate_at(schedule: optax.Schedule, step) -> np.ndarray:
    """The schedule's value at `step` as float32 (for logs and tests)."""
    return np.asarray(schedule(step), np.float32)


def _per_example_keys(
    base_key: jax.Array, step: jax.Array, batch_size: int, axis_name: str | None
) -> jax.Array:
    """One key per example, from (base key, step, the example's index in the global batch).

    Keyed by the global index, the draws do not depend on how the batch is split over devices or hosts:
    a run on 4 devices draws exactly what a run on 1 device draws for the same global batch.
    """
    first = 0 if axis_name is None else jax.lax.axis_index(axis_name) * batch_size
    step_key = jax.random.fold_in(base_key, step)
    return jax.vmap(lambda i: jax.random.fold_in(step_key, i))(first + jnp.arange(batch_size))


def make_train_step(
    model,
    config,
    schedule,
    lr_schedule: optax.Schedule,
    optimizer: optax.GradientTransformation,
    ema,
    empty_text: tuple[np.ndarray, np.ndarray],
    geometry=None,
    axis_name: str | None = "batch",
):
    """The pure step `train_step(state, batch, rng) -> (state, metrics)`.

    batch: this device's `motion f32[b, T, D]` (standardized), `mask bool[b, T]`, `tokens i32[b, L]`,
    `text_mask bool[b, L]`; rng: the run's base key data (uint32[2]). Per example: t uniform in
    [0, diffusion steps), noise, and, with probability `model.cond_drop_prob`, the caption replaced by the
    empty caption `empty_text` (tokens i32[L], mask bool[L]) for classifier-free guidance. Gradients and
    losses are summed over `axis_name` (each device computes its share of the global-batch mean).
    Metrics: every loss term, `grad_norm`, `lr`, `skipped` (1 if this step's gradients were non-finite
    and the update was skipped), `nonfinite_total`.
    """
    prediction = config.diffusion.prediction
    drop_prob = float(config.model.cond_drop_prob)
    empty_tokens, empty_mask = (jnp.asarray(a) for a in empty_text)

    def train_step(state: TrainState, batch, rng):
        x0, mask = batch["motion"].astype(jnp.float32), batch["mask"]
        size = x0.shape[0]
        keys = _per_example_keys(jax.random.wrap_key_data(rng), state.step, size, axis_name)
        draws = jax.vmap(lambda k: jax.random.split(k, 4))(keys)
        # Each draw's dtype is explicit: under jax_enable_x64 the defaults are 64-bit, other numbers for
        # the same key (a notebook's x64 would train another run from the same seed).
        t = jax.vmap(lambda k: jax.random.randint(k, (), 0, schedule.num_steps, jnp.int32))(draws[:, 0])
        noise = jax.vmap(lambda k: jax.random.normal(k, x0.shape[1:], jnp.float32))(draws[:, 1])
        drop = jax.vmap(lambda k: jax.random.bernoulli(k, np.float32(drop_prob)))(draws[:, 2])
        tokens = jnp.where(drop[:, None], empty_tokens[None], batch["tokens"])
        text_mask = jnp.where(drop[:, None], empty_mask[None], batch["text_mask"])
        dropout_key = draws[0, 3]  # one per device: dropout (0 by default) is the one draw tied to the split
        x_t = diffusion.q_sample(schedule, x0, t, noise)

        def loss_fn(params):
            output = model.apply(
                {"params": params},
                x_t,
                t,
                tokens,
                text_mask,
                mask,
                deterministic=False,
                rngs={"dropout": dropout_key},
            )
            terms = losses.compute_losses(
                schedule,
                output,
                x_t,
                x0,
                noise,
                t,
                mask,
                config.loss,
                prediction,
                geometry,
                axis_name=axis_name,
            )
            return terms["loss"], terms

        grads, terms = jax.grad(loss_fn, has_aux=True)(state.params)
        if axis_name is not None:
            grads, terms = jax.lax.psum((grads, terms), axis_name)
        new_state = apply_gradients(state, grads, optimizer, ema, config.optim.ema_every)
        metrics = {
            **terms,
            "grad_norm": global_norm(grads),
            # Skipped steps do not advance the optimizer's schedule: it has seen step - skipped updates.
            "lr": jnp.asarray(lr_schedule(state.step - nonfinite_counts(state.opt_state)[1]), jnp.float32),
            "skipped": 1.0 - last_step_was_finite(new_state.opt_state).astype(jnp.float32),
            "nonfinite_total": nonfinite_counts(new_state.opt_state)[1].astype(jnp.float32),
        }
        return new_state, metrics

    return train_step


# ---------------------------------------------------------------- the training loop (I/O lives here)

# Config fields that may change between a run and its resumption (everything else must match).
RESUMABLE_CHANGES = ("train.", "sample.", "eval.", "distributed.", "data.root", "data.raw_root")


def incompatible_fields(saved: dict[str, Any], current) -> list[str]:
    """Config fields whose values differ between a checkpoint's run and this one, and matter for resuming.
    A field the saved config lacks counts as its default (`config.with_defaults`)."""
    old, new = config_lib.flatten(config_lib.with_defaults(saved)), config_lib.flatten(current)
    return sorted(
        key
        for key in set(old) | set(new)
        if old.get(key) != new.get(key) and not key.startswith(RESUMABLE_CHANGES)
    )


# What a resume may change that says how the run trains, samples and evaluates: RESUMABLE_CHANGES less
# distributed.*, which belongs to the machine. A resume logs each of them it changes (`changed_settings`).
SETTINGS = tuple(prefix for prefix in RESUMABLE_CHANGES if prefix != "distributed.")


def changed_settings(saved: dict[str, Any], current) -> list[tuple[str, Any, Any]]:
    """(field, saved value, current value) of each field of `SETTINGS` whose value differs between a run's
    saved config (a checkpoint's or run record's; a field it lacks counts as its default) and `current`:
    what a resume changes, e.g. a train.batch_size a config file gives where the run's first command line
    had overridden it. A data path that names the same folder is no change."""
    old, new = config_lib.flatten(config_lib.with_defaults(saved)), config_lib.flatten(current)
    changes = []
    for name in sorted(new):
        was, now = old.get(name), new[name]
        if not name.startswith(SETTINGS) or was == (list(now) if isinstance(now, tuple) else now):
            continue
        path = name in ("data.root", "data.raw_root") and bool(was) and bool(now)
        if path and Path(was).resolve() == Path(now).resolve():
            continue
        changes.append((name, was, now))
    return changes


def changes_line(where: str, changes: list[tuple[str, Any, Any]]) -> str:
    """The log line of `changed_settings`: 'config: changed from the run's <where>: name old -> new, ...'."""
    shown = ", ".join(f"{name} {was!r} -> {now!r}" for name, was, now in changes)
    return f"config: changed from the run's {where}: {shown}"


def last_trained_config(workdir: Path) -> tuple[str, dict[str, Any]] | None:
    """(where, config) of what the run in `workdir` last trained with: its latest checkpoint's config
    ("latest checkpoint (step N)"), or where it holds none, its run record's ("run record (run.json; no
    checkpoint yet)"); None where it has neither, or they cannot be read (training says why). Reads only."""
    try:
        if _holds_a_checkpoint(workdir):
            reader = checkpoint.Checkpointer(workdir, read_only=True)
            try:
                step = reader.latest_step()
                saved = reader.restore_metadata(step) if step is not None else {}
            finally:
                reader.close()
            if isinstance(saved.get("config"), dict):
                return f"latest checkpoint (step {step})", saved["config"]
            return None
        record = workdir / RUN_RECORD
        if record.is_file():
            return f"run record ({RUN_RECORD}; no checkpoint yet)", read_run_record(record)
    except (OSError, UserError):
        pass
    return None


def total_steps(train_config, steps_per_epoch: int) -> int:
    """train.num_steps when > 0, else train.num_epochs epochs."""
    if train_config.num_steps > 0:
        return int(train_config.num_steps)
    return int(train_config.num_epochs * steps_per_epoch)


# A share of each epoch's clips past its last whole batch above which `epoch_count_note` speaks.
EPOCH_REMAINDER_NOTED = 0.1


def epoch_count_note(train_config, num_clips: int, global_batch: int) -> str:
    """For the run's `data:` line: where train.num_epochs sets its length and more than a tenth of the clips
    lie past an epoch's last whole batch, why its steps make fewer epochs than asked (each epoch counts
    num_clips // batch steps, as the original's loader that drops its last partial batch; the batches
    themselves run on into the next epoch's clips, dropping none) and the train.num_steps that makes them;
    else ''. A batch larger than the split has its own warning."""
    epochs = train_config.num_epochs
    left = num_clips % global_batch
    if train_config.num_steps > 0 or global_batch > num_clips or left <= EPOCH_REMAINDER_NOTED * num_clips:
        return ""
    per_epoch = num_clips // global_batch
    return (
        f" (train.num_epochs={epochs:g} counts {per_epoch} step{'s' if per_epoch != 1 else ''} an epoch, "
        f"{num_clips} clips // {global_batch}, as a loader that drops each epoch's last partial batch; "
        f"--config.train.num_steps={math.ceil(epochs * num_clips / global_batch)} makes {epochs:g} epochs)"
    )


class MetricsLog:
    """Every `log_every` steps: one JSON object per row in <workdir>/metrics.jsonl (a non-finite value as
    null: strict JSON), TensorBoard scalars in <workdir>/tensorboard, and a progress line on the console.
    Silent on processes other than 0."""

    def __init__(
        self, workdir: Path, total: int, enabled: bool, first_step: int = 0, log: Callable[[str], Any] = print
    ):
        """`first_step`: the step the run starts (or resumes) from. Rows logged after it by an earlier,
        interrupted attempt (and a line cut short by a kill) are dropped: the resumed run logs them again.
        `log`: where the progress line goes (`run`'s own log: a caller that silences or collects the run's
        lines gets these too), followed by a flush of stdout, as a scheduler's log file needs."""
        self.path, self.total, self.enabled, self.log = workdir / "metrics.jsonl", total, enabled, log
        self.writer = None
        if enabled:
            # Imported here: where torch is installed, tensorboardX imports it (1.4 s), which the modes that
            # read train.py's helpers but write no TensorBoard log (config, sample, eval) need not pay.
            from tensorboardX import SummaryWriter

            self._truncate(first_step)
            self.writer = SummaryWriter(str(workdir / "tensorboard"), purge_step=first_step + 1)

    def _truncate(self, first_step: int) -> None:
        if not self.path.is_file():
            return
        kept, dropped = [], 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                keep = int(row["step"]) <= first_step
            except (ValueError, KeyError, TypeError):
                keep = False
            if keep:
                kept.append(line)
            elif line.strip():
                dropped += 1
        if dropped:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
            os.replace(tmp, self.path)

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(files.json_safe({"step": step, **values}), allow_nan=False) + "\n")
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()
        width = len(str(self.total))
        bar = "#" * int(20 * step / max(self.total, 1))
        terms = " ".join(f"{k}={v:.4g}" for k, v in values.items() if k.startswith("loss"))
        self.log(
            f"[{bar:<20}] step {step:>{width}}/{self.total} {terms} lr={values['lr']:.3g} "
            f"grad_norm={values['grad_norm']:.3g} skipped={values['skipped_steps']:.0f} "
            f"{values['steps_per_s']:.2f} steps/s {values['samples_per_s']:.1f} samples/s"
        )
        sys.stdout.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def differing(saved: dict[str, Any], current, names: list[str]) -> str:
    """`names` with their values, run's -> this config's, e.g. `optim.lr (0.001 -> 0.0005)`: what a
    refusal names, so that the command line that caused it can be corrected without opening run.json."""
    old, new = config_lib.flatten(config_lib.with_defaults(saved)), config_lib.flatten(current)
    return config_lib.listed([f"{name} ({old.get(name)!r} -> {new.get(name)!r})" for name in names])


def _topology() -> dict[str, int]:
    """The processes and devices a run trains on, as its checkpoints record them: the pmapped mean of the
    gradients sums in an order that may depend on them: a resume on others may match to rounding only."""
    return {"process_count": jax.process_count(), "device_count": jax.device_count()}


def precision_change(compute_dtype: str, saved_backend: str | None, backend: str, step: int) -> str | None:
    """The note for a run whose model.compute_dtype=auto resolves to another dtype on this backend than on
    the one its checkpoint `step` was trained on (a CPU run requeued on a GPU, say); None otherwise."""
    if compute_dtype != "auto" or not saved_backend or saved_backend == backend:
        return None
    then = jnp.dtype(model_lib.resolve_compute_dtype("auto", saved_backend)).name
    now = jnp.dtype(model_lib.resolve_compute_dtype("auto", backend)).name
    if then == now:
        return None
    return (
        f"model.compute_dtype=auto: the run computed in {then} on {saved_backend} up to checkpoint {step} "
        f"and computes in {now} on {backend} from here, mixing precisions (a run that needs one sets "
        "model.compute_dtype from its start)"
    )


def check_resumable(saved: dict[str, Any], config, workdir: Path, where: str | None = None) -> None:
    """Refuse to resume a run whose checkpoints came from a config that differs where it matters; `where`
    names the checkpoint read (its folder), where the workdir is not enough."""
    changed = incompatible_fields(saved["config"], config)
    if changed:
        copied = (
            " (copied from another run? move it out of checkpoints/ to resume from the one before)"
            if where
            else ""
        )
        raise checkpoint.CheckpointError(
            f"{where or workdir} holds a checkpoint of a run whose config differs in "
            f"{differing(saved['config'], config, changed)}{copied}; "
            f"resuming would mix two experiments. Use a new --workdir, or the same config"
        )


def statistics_gap(mean, std, reference_mean, reference_std) -> tuple[float, float]:
    """(largest mean shift in units of the reference std, largest relative std change) of statistics
    against reference ones: what check_same_data and a fine-tuning's note compare to 1e-4."""
    reference_mean = np.asarray(reference_mean, np.float64)
    reference_std = np.asarray(reference_std, np.float64)
    mean_shift = float(np.max(np.abs(np.asarray(mean, np.float64) - reference_mean) / reference_std))
    std_change = float(np.max(np.abs(np.asarray(std, np.float64) / reference_std - 1.0)))
    return mean_shift, std_change


def statistics_change(mean_shift: float, std_change: float, tolerance: float = 1e-4) -> str:
    """What differs, in words (`statistics_gap`'s two numbers): only the parts above `tolerance`
    (check_same_data's; eval's check has its own), three significant digits ('stds by up to 772%')."""
    parts = [f"means by up to {mean_shift:.3g} std"] if mean_shift > tolerance else []
    parts += [f"stds by up to {100 * std_change:.3g}%"] if std_change > tolerance else []
    return ", ".join(parts)


def check_same_data(saved: dict[str, Any], dataset, workdir: Path) -> None:
    """Refuse to resume on other data than the run trained on: data.root and data.raw_root may move (a
    dataset copied or prepared again elsewhere), but the normalisation statistics the parameters were
    trained under must be the same, to float rounding (1e-4 of a feature's std)."""
    mean, std = data_statistics(saved)
    if mean.shape != dataset.mean.shape:
        raise checkpoint.CheckpointError(
            f"{workdir} holds checkpoints of a run trained on {mean.shape[-1]} features per frame; the "
            f"dataset at {dataset.root} has {dataset.feature_size}. Point data.root at the data the run "
            "trained on, or use a new --workdir"
        )
    mean_shift, std_change = statistics_gap(dataset.mean, dataset.std, mean, std)
    if mean_shift > 1e-4 or std_change > 1e-4:
        counts = saved.get("dataset", {}).get("counts", {}).get("train")
        clips = (
            "" if counts is None else f" (train clips: {counts} then, {len(dataset.split('train').ids)} now)"
        )
        started = saved.get("init_from") or {}
        if started:  # it normalises with its source's statistics whatever it reads: the data differ
            why = (
                f"the training-split statistics of the data it fine-tuned on differ "
                f"({statistics_change(mean_shift, std_change)}; it normalises with the statistics of "
                f"{started.get('workdir')}, the run it started from, whatever data it reads), and resuming "
                "would go on fine-tuning on other data"
            )
        else:
            why = (
                f"its normalisation statistics differ ({statistics_change(mean_shift, std_change)}), and "
                "resuming would go on training the parameters under other statistics"
            )
        raise checkpoint.CheckpointError(
            f"{workdir} holds checkpoints of a run trained on other data than the dataset at {dataset.root}"
            f"{clips}: {why}. Point data.root (and data.raw_root) at the data the run trained on, or use a "
            "new --workdir"
        )


def train_clips_record(source: pipeline.BatchSource, split) -> dict[str, Any]:
    """What the data order follows besides the seed and batch size: the count of the clips training reads
    and the sha256 of their [id, frames, captions] in order (JSON, compact separators). Recorded with each
    checkpoint: a HumanML3D folder's statistics are its Mean.npy and Std.npy, which an edited train.txt or
    new motion files leave as they are, so `check_same_data` cannot see such a change."""
    clips = [
        [str(split.ids[i]), int(len(split.motions[i])), list(split.captions[i])]
        for i in source.clip_indices.tolist()
    ]
    digest = hashlib.sha256(json.dumps(clips, separators=(",", ":")).encode()).hexdigest()
    return {"count": len(clips), "sha256": digest}


def train_clips_note(saved: dict[str, Any], now: dict[str, Any], step: int) -> str | None:
    """The line a resume logs where the training clips differ from those its checkpoint's run read
    (`train_clips_record`), None where they are the same or the checkpoint predates the record."""
    was = saved.get("train_clips")
    if not isinstance(was, dict) or was.get("sha256") == now["sha256"]:
        return None
    counts = (
        f"{was.get('count')} clips then, {now['count']} now"
        if was.get("count") != now["count"]
        else f"{now['count']} clips then and now, not the same ones"
    )
    return (
        f"the training clips changed since the checkpoint was saved ({counts}: the split file, the motion "
        f"files or their captions differ): from step {step + 1} the run reads another data order than it "
        "would have, and it will not equal an uninterrupted run on either set of clips"
    )


def data_statistics(saved: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of the data a checkpoint's run trained on, as float64: its normalisation statistics, or
    for a run started from another's weights (`train.init_from`), which normalises with that run's, those
    of its own dataset, which its checkpoints record apart."""
    own = (saved.get("init_from") or {}).get("data_statistics") or saved
    return np.asarray(own["mean"], np.float64), np.asarray(own["std"], np.float64)


# ---------------------------------------------------------------- starting from another run's weights

# What of a source run's config may differ in a run started from its weights without a note: settings of
# how the model computes (not what), and the caption dropout for guidance, which fine-tuning may change.
INIT_FREE = ("model.compute_dtype", "model.remat", "model.kernels", "model.dropout", "model.cond_drop_prob")


class InitFrom(NamedTuple):
    """What a run started from another run's checkpoint takes from it (`load_init_from`)."""

    params: Any  # float32 host arrays, shaped as this run's model
    tokenizer: text.Tokenizer
    mean: np.ndarray  # float32 [D]: the normalisation its weights were trained under
    std: np.ndarray
    record: dict[str, Any]  # what this run's checkpoints record of it (`run_metadata`'s "init_from")


def init_source(value: str) -> tuple[Path, int | None]:
    """(run folder, step: None for its latest) that train.init_from names: a run's workdir, or one of its
    checkpoint folders, <workdir>/checkpoints/<step>; its checkpoints/ folder or its run record (run.json)
    name the workdir too (they had been read as workdirs, refused with a hint about --workdir)."""
    path = Path(value).expanduser()
    if path.name.isdigit() and path.parent.name == "checkpoints":
        return path.parent.parent, int(path.name)
    if path.name == "checkpoints" and path.is_dir() and not (path / "checkpoints").is_dir():
        return path.parent, None
    if path.name == RUN_RECORD and path.is_file():
        return path.parent, None
    return path, None


def weights_sha256(params) -> str:
    """sha256 of a parameter tree's names, shapes and float32 bytes, in tree order: which weights a run
    started from, comparable across copies of the checkpoint."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        array = np.ascontiguousarray(np.asarray(leaf, np.float32))
        digest.update(f"{jax.tree_util.keystr(path)}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def joint_names_note(source, here, where: str, root, source_root=None) -> str | None:
    """For a source skeleton and this data's with the same parents (`load_init_from` has checked them):
    None where the joints' names agree in order; a note where they differ by name alone (a renamed
    skeleton: its features are read joint for joint, by place); UserError where this data list the same
    joints in another order, as an exporter that writes sibling joints in another order does (the right
    arm's subtree before the left's gives the same parents): each feature would be read as another joint's,
    a left arm as a right one, with nothing else to show it but a large gap in the statistics. The refusal
    names the way on: the data prepared again in the source's order (data.joint_order: the skeleton.json
    of the source's data, at `source_root`, where it is there)."""
    if source is None or here is None or source.names == here.names:
        return None
    moved = [j for j, (a, b) in enumerate(zip(source.names, here.names, strict=True)) if a != b]
    j = moved[0]
    first = f"joint {j} is {here.names[j]!r} here, {source.names[j]!r} in the source's skeleton"
    if sorted(source.names) == sorted(here.names):
        listed = Path(str(source_root)) / "skeleton.json" if source_root else None
        order = (
            listed if listed is not None and listed.is_file() else "<a skeleton.json of the source's joints>"
        )
        raise UserError(
            f"{where}: the dataset at {root} lists the source's joints in another order ({first}; "
            f"{len(moved)} joints in other places): its features would be read as other joints' (e.g. a "
            "left arm's as a right arm's). Prepare the data again, into a new data.root, in the source's "
            f"joint order: --mode prepare with --config.data.joint_order={order} (and the same on the "
            "training command)"
        )
    return (
        f"the joints' names differ from the source's ({first}; {len(moved)} names in all): the hierarchy is "
        "the same, so each joint takes the source's joint at its place"
    )


def load_init_from(config, dataset, captions, workdir: Path, log=print) -> InitFrom:
    """The weights, tokenizer and normalisation statistics of the checkpoint `config.train.init_from`
    names, checked against this run's data and model; UserError naming train.init_from where they do not
    fit. Notes (`log`) what differs that training can live with: the data's statistics or frame rate, the
    words of the training `captions` (all of them, flat) that the source's vocabulary lacks, config fields
    of the model and the diffusion."""
    from motion_ddpm_jax import sampling  # sampling imports render, which train needs only here

    value = str(config.train.init_from)
    field = f"train.init_from={value}"
    source, step = init_source(value)
    if source.resolve() == workdir.resolve():
        raise UserError(
            f"{field} is this run's own --workdir: a run resumes from its own checkpoints by itself; "
            "train.init_from names another run's workdir (or one of its checkpoints) to start a new run from"
        )
    if not source.is_dir():
        raise UserError(
            f"{field}: no such folder; expected a run's workdir (its latest checkpoint) or one of its "
            "checkpoints, <workdir>/checkpoints/<step>"
        )
    use_ema = config.train.init_weights == "ema"
    try:
        loaded = sampling.load_model(
            source, step, use_ema, f"--config.train.init_from={source.resolve()}/checkpoints/<step>"
        )
    except checkpoint.CheckpointError as error:
        raise checkpoint.CheckpointError(f"{field}: {error}") from None
    where = f"{field} (checkpoint {loaded.step}, {config.train.init_weights} weights)"
    features = int(loaded.metadata["feature_size"])
    if loaded.representation != dataset.representation or features != dataset.feature_size:
        raise UserError(
            f"{where} was trained on {loaded.representation} data of {features} features per frame; the "
            f"dataset at {dataset.root} holds {dataset.representation} data of {dataset.feature_size}: its "
            "weights read and write another motion space. Start from a run on data of this layout"
        )
    if loaded.skeleton is not None and dataset.skeleton is not None:
        if tuple(loaded.skeleton.parents) != tuple(dataset.skeleton.parents):
            raise UserError(
                f"{where} was trained on a skeleton of another hierarchy ({loaded.skeleton.num_joints} "
                f"joints) than the dataset at {dataset.root} ({dataset.skeleton.num_joints} joints): a "
                "feature's joint would not be the same joint. Start from a run on this skeleton"
            )
    renamed = joint_names_note(
        loaded.skeleton, dataset.skeleton, where, dataset.root, loaded.metadata.get("data_root")
    )
    saved_config = config_lib.flatten(config_lib.with_defaults(loaded.metadata["config"]))
    current = config_lib.flatten(config)
    differs = sorted(n for n in current if n not in INIT_FREE and saved_config.get(n) != current[n])
    shapes = model_lib.param_shapes(
        model_lib.model_from_config(config, input_feats=features, text_vocab_size=loaded.tokenizer.vocab_size)
    )
    got = {path: leaf for path, leaf in jax.tree_util.tree_flatten_with_path(loaded.params)[0]}
    mismatched = [
        f"{jax.tree_util.keystr(path)}: "
        + (
            f"{np.shape(got[path])} there, {want.shape} here"
            if path in got
            else f"absent there, {want.shape} here"
        )
        for path, want in jax.tree_util.tree_flatten_with_path(shapes)[0]
        if path not in got or np.shape(got[path]) != want.shape
    ]
    if mismatched or len(got) != len(jax.tree.leaves(shapes)):
        fields = [n for n in differs if n.startswith("model.") or n == "data.max_motion_length"]
        because = (
            f"; the configs differ in {differing(loaded.metadata['config'], config, fields)}: set them to "
            "the source run's"
            if fields
            else ""
        )
        raise UserError(
            f"{where}: its parameters do not fit this run's model ("
            f"{'; '.join(mismatched[:3]) or 'parameters this model lacks'}){because}"
        )
    notes = [renamed] if renamed else []
    changed = [n for n in differs if n.startswith(("model.", "diffusion."))]
    if changed:
        notes.append(
            "this run's config differs from the source run's in "
            + differing(loaded.metadata["config"], config, changed)
        )
    mean_shift, std_change = statistics_gap(dataset.mean, dataset.std, loaded.mean, loaded.std)
    if mean_shift > 1e-4 or std_change > 1e-4:
        notes.append(
            f"the dataset's normalisation statistics differ from the source run's "
            f"({statistics_change(mean_shift, std_change)}): this run normalises with the source's, "
            "which its weights were trained under (sampling and eval read them from the checkpoints)"
        )
    if not math.isclose(loaded.fps, dataset.fps, rel_tol=1e-3):
        notes.append(
            f"the source run trained on {loaded.fps:g} fps data, these are {dataset.fps:g} fps: its motion's "
            "speeds were learned per frame at the other rate"
        )
    words = {word for caption in captions for word in loaded.tokenizer.unseen_words(caption)}
    if words:
        shown = ", ".join(sorted(words)[:5])
        notes.append(
            f"{len(words)} word(s) of the training captions are not in the source run's vocabulary "
            f"({shown}{', ...' if len(words) > 5 else ''}): the model reads them spelled in bytes, as it "
            "reads unseen words at sampling"
        )
    log(
        f"starting from the {config.train.init_weights} weights of checkpoint {loaded.step} of "
        f"{source.resolve()}, with its tokenizer ({loaded.tokenizer.vocab_size} ids) and normalisation "
        "statistics too; the optimizer and the EMA start anew" + "".join(f"; {note}" for note in notes)
    )
    record = {
        "workdir": str(source.resolve()),
        "step": int(loaded.step),
        "weights": str(config.train.init_weights),
        "weights_sha256": weights_sha256(loaded.params),
        "data_root": loaded.metadata.get("data_root"),
        "data_statistics": {"mean": dataset.mean.tolist(), "std": dataset.std.tolist()},
    }
    earlier = loaded.metadata.get("init_from")
    if isinstance(earlier, dict):  # the source was fine-tuned too: its record, so the chain stays whole
        record["init_from"] = earlier
    # In this model's tree (the checkpoint's may come back as other mappings), float32 as the run trains.
    leaves = [
        np.asarray(got[path], np.float32) for path, _ in jax.tree_util.tree_flatten_with_path(shapes)[0]
    ]
    params = jax.tree.unflatten(jax.tree.structure(shapes), leaves)
    return InitFrom(params, loaded.tokenizer, loaded.mean, loaded.std, record)


RUN_RECORD = "run.json"  # written into a workdir by the run that owns it


class WorkdirError(UserError):
    """A --workdir that belongs to something else: another run's config, or files no run wrote."""


def _holds_a_checkpoint(workdir: Path) -> bool:
    """Whether the checkpoint folder has a complete step (Orbax names it by its step once it is complete)."""
    folder = checkpoint.checkpoint_dir(workdir)
    return folder.is_dir() and any(p.is_dir() and p.name.isdigit() for p in folder.iterdir())


def _left_by_a_refused_start(path: Path) -> bool:
    """What a run refused or killed before its run record leaves in a new workdir: the lock file, a run
    record cut short (.run.json.tmp), the shared-folder check's file and an empty checkpoint folder
    (nothing of a user's)."""
    if path.name in (LOCK, f".{RUN_RECORD}.tmp") and path.is_file():  # a run record cut short, too
        return True
    if path.name.startswith(SHARED_CHECK) and path.is_file():  # check_processes_agree's, left by a kill
        return True
    return path.name == "checkpoints" and path.is_dir() and not any(path.iterdir())


def _tidy_a_refused_start(workdir: Path, refused_start: dict[str, bool]) -> None:
    """After a start refused or stopped before its run record (the config against the data, a resume on
    other data, a Ctrl-C, a full disk): remove what it left in a workdir that holds no run -- its lock
    file, a run record cut short, an empty checkpoint folder, and the workdir itself where this start made
    it and nothing else is there."""
    if refused_start["recorded"]:
        return
    (workdir / LOCK).unlink(missing_ok=True)  # this process's: it holds the lock (`workdir_lock`)
    (workdir / f".{RUN_RECORD}.tmp").unlink(missing_ok=True)  # a run record cut short (a full disk)
    with contextlib.suppress(OSError):  # not empty: a checkpoint (of a run from before run records)
        checkpoint.checkpoint_dir(workdir).rmdir()
    if refused_start["made"]:
        with contextlib.suppress(OSError):
            workdir.rmdir()


def claim_workdir(workdir: Path, config) -> bool:
    """Make sure `workdir` is this run's before anything is written into it; True when it still needs
    its run record (`write_run_record`).

    A workdir is this run's when it is missing or empty, when its run record (run.json) names a config
    that differs from this one only where resuming allows (`RESUMABLE_CHANGES`), or when it holds
    checkpoints (of a run from before run records; their metadata is checked by `check_resumable`).
    Anything else -- a folder of the user's, or another run that never reached its first checkpoint --
    raises WorkdirError naming what was found: a workdir is never silently reused.
    """
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"--workdir {workdir} is a file, not a folder; use a new --workdir")
    record = workdir / RUN_RECORD
    if record.is_file():
        saved_config = read_run_record(record)
        changed = incompatible_fields(saved_config, config)
        if changed:
            stopped = (
                # A config file changed since the run started (configs/beat_rot.py's representation) is
                # no longer "the same config": the record is.
                f" (launch.py --workdir {workdir} without --config resumes it with its own)"
                if _holds_a_checkpoint(workdir)
                else ". It holds no checkpoint: if that run has stopped, it left nothing to resume; move "
                f"{workdir} away (or delete it) to train this config there"
            )
            raise WorkdirError(
                f"{workdir} belongs to a run whose config differs in "
                f"{differing(saved_config, config, changed)} "
                f"(see {record}); continuing it would mix two experiments. Use a new --workdir, or the "
                f"same config{stopped}"
            )
        return False
    if workdir.is_dir():
        entries = sorted(p.name for p in workdir.iterdir() if not _left_by_a_refused_start(p))
        if entries and not _holds_a_checkpoint(workdir):
            shown = ", ".join(entries[:6]) + (f" and {len(entries) - 6} more" if len(entries) > 6 else "")
            raise WorkdirError(
                f"--workdir {workdir} is not empty ({shown}) and holds no run record ({RUN_RECORD}) or "
                f"checkpoint of a training run; training would write into someone else's folder. Use a "
                f"new or empty --workdir"
            )
    return True


LOCK = ".train.lock"  # held (flock) by the process that trains in a workdir, released when it exits


@contextlib.contextmanager
def workdir_lock(workdir: Path):
    """Hold `workdir`'s lock while training: a second training process started in the same workdir would
    write the same checkpoints and remove the first one's checkpoint in progress, so it is refused, naming
    the process that holds it. The kernel releases the lock when that process ends, killed or not. Where
    the file system cannot lock (some network mounts) nothing is held. A lock file removed by its holder
    (`_tidy_a_refused_start`) between this process's open and lock is opened again: a lock is only held on
    the file the path names."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        yield
        return
    path = workdir / LOCK
    for _ in range(100):
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise WorkdirError(
                f"{workdir} is in use by another training process ({holder}); wait for it to end, or use "
                "another --workdir"
            ) from None
        except OSError:  # no locking on this file system
            handle.close()
            yield
            return
        try:
            if os.path.samestat(os.fstat(handle.fileno()), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        handle.close()  # locked a file no longer at `path`: its holder removed it meanwhile
    else:
        raise WorkdirError(f"{path}: its lock file keeps being replaced; is another process removing it?")
    with handle:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_run_record(record: Path) -> dict[str, Any]:
    """The config a run record (`write_run_record`) holds, as a dict; WorkdirError if it is unreadable."""
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
        if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
            raise ValueError("expected a JSON object whose 'config' is an object")
    except (OSError, ValueError) as error:
        raise WorkdirError(
            f"{record}: unreadable run record ({type(error).__name__}: {error}); it should hold the JSON "
            "written when this workdir's run started. Use a new --workdir"
        ) from None
    return saved["config"]


def write_run_record(workdir: Path, config, software: dict[str, Any] | None = None) -> None:
    """<workdir>/run.json: the config this workdir's run started with (see `claim_workdir`), and the software
    and command line that started it (`provenance`; `software` as `provenance.software` gives it, read
    here when not given)."""
    record = workdir / RUN_RECORD
    payload = {
        "config": config.to_dict(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "software": software or provenance.software(jax.local_devices()[0]),
        "command": provenance.command_line(),
    }
    tmp = record.with_name(f".{RUN_RECORD}.tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, record)
    except OSError as error:  # a full disk: nothing half-written stays (a kill's is ignored on restart)
        tmp.unlink(missing_ok=True)
        raise OSError(error.errno, f"writing the run record {record}: {error.strerror}") from None


def make_geometry(
    config, dataset, statistics: tuple[np.ndarray, np.ndarray] | None = None
) -> losses.Geometry | None:
    """What the geometric loss needs (statistics, skeleton, representation), or None when it is off.
    statistics: (mean, std) the run normalises with, where not the dataset's (`train.init_from`)."""
    if not config.loss.use_geometric_loss:
        return None
    if dataset.skeleton is None or dataset.representation not in losses.REPRESENTATIONS:
        raise UserError(
            f"loss.use_geometric_loss needs a skeleton and {'/'.join(losses.REPRESENTATIONS)} data; "
            f"{dataset.root} holds {dataset.representation} data"
            + (" without a skeleton (no skeleton.json)" if dataset.skeleton is None else "")
            + ". Set --config.loss.use_geometric_loss=False"
        )
    mean, std = (dataset.mean, dataset.std) if statistics is None else statistics
    return losses.Geometry(
        mean=jnp.asarray(mean),
        std=jnp.asarray(std),
        skeleton=dataset.skeleton,
        representation=dataset.representation,
    )


def run_metadata(
    config,
    dataset,
    tokenizer,
    steps: int,
    steps_per_epoch: int,
    software: dict[str, Any] | None = None,
    init_from: dict[str, Any] | None = None,
    statistics: tuple[np.ndarray, np.ndarray] | None = None,
    train_clips: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything sampling needs besides the parameters: a checkpoint folder alone is enough. With the
    software and command line of the process that saves it (`provenance`; `software` as
    `provenance.software` gives it, read here when not given), which a resume compares. A run started from
    another's weights records where from (`init_from`: `InitFrom.record`) and normalises with that run's
    `statistics` (mean, std): those are the ones sampling needs."""
    mean, std = (dataset.mean, dataset.std) if statistics is None else statistics
    return {
        "config": config.to_dict(),
        "total_steps": steps,
        "steps_per_epoch": steps_per_epoch,
        "tokenizer": tokenizer.to_dict(),
        "mean": np.asarray(mean).tolist(),
        "std": np.asarray(std).tolist(),
        "skeleton": None if dataset.skeleton is None else dataset.skeleton.to_dict(),
        "dataset": {k: v for k, v in dataset.info.items() if k != "fingerprint"},
        "data_root": str(Path(dataset.root).resolve()),  # where it was, for an eval given no config
        "representation": dataset.representation,
        "feature_size": dataset.feature_size,
        "fps": dataset.fps,
        **_topology(),  # a resume on another one may go on equal to float rounding only, not bitwise
        "software": software or provenance.software(jax.local_devices()[0]),
        "command": provenance.command_line(),
        **({"init_from": init_from} if init_from else {}),
        **({"train_clips": train_clips} if train_clips else {}),
    }


def cut_captions_note(
    captions, tokenizer: text.Tokenizer, max_length: int, fine_tuning: bool = False
) -> str | None:
    """The note for training captions longer than model.text_max_length holds (bos and eos besides), whose
    ends the model never reads (`Tokenizer.encode` cuts them); None where every one fits. `fine_tuning`:
    the run started from another's weights (train.init_from), whose text length it cannot change."""
    room = max_length - 2
    captions = list(captions)
    long = [captions[index] for index, _ in tokenizer.overlong(captions, max_length)]
    if not long:
        return None
    shown = f"{long[0][:60]!r}{'...' if len(long[0]) > 60 else ''}"
    return (
        f"{len(long)} of the {len(captions)} training captions take more than the {room} tokens that "
        f"model.text_max_length={max_length} holds besides bos and eos (e.g. {shown}): the model reads "
        "their first tokens only; "
        + (
            "model.text_max_length is the source run's (train.init_from), and each word its vocabulary "
            "lacks takes 1 + its UTF-8 bytes"
            if fine_tuning
            else "raise --config.model.text_max_length to train on them whole"
        )
    )


def progress_cut_note(captions, tokenizer: text.Tokenizer, max_length: int) -> str | None:
    """The note for progress captions (train.sample_captions, or the validation captions drawn in their
    place) longer than model.text_max_length holds besides bos and eos; None where each fits. Each
    progress GIF samples with generate's CaptionCutWarning silenced (not a warning at every GIF), so
    without this line nothing said that a picture shows its caption's first words only."""
    from motion_ddpm_jax import sampling

    room = max_length - 2
    long = tokenizer.overlong(captions, max_length)
    if not long:
        return None
    said = config_lib.listed(
        [f"caption {i} ({sampling.shown_caption(captions[i])}) takes {n} tokens" for i, n in long], 3, "; "
    )
    return (
        f"train.sample_every: progress {said}; the progress samples read the first {room} "
        f"(model.text_max_length {max_length} less bos and eos)"
    )


def progress_captions(config, dataset, count: int = 4) -> list[str]:
    """train.sample_captions split on '|', or the first `count` distinct validation captions."""
    if str(config.train.sample_captions).strip():
        return config_lib.split_captions(config.train.sample_captions, "config field train.sample_captions")
    try:
        split = dataset.split("val")
    except (ValueError, KeyError):
        split = dataset.split("train")
    captions: list[str] = []
    for options in split.captions:
        for caption in options[:1]:
            if caption not in captions:
                captions.append(caption)
    return captions[:count]


class ProgressRenderer:
    """Every `train.sample_every` steps: a few samples from the current EMA parameters, rendered to
    <workdir>/progress/step_<step, 7 digits>.gif, and the training curves to <workdir>/progress/curves.png,
    so a user watching the run sees it learn. A failure here is logged and never stops the training."""

    def __init__(self, config, workdir: Path, metadata: dict[str, Any], captions: list[str], log=print):
        self.config, self.metadata, self.captions, self.log = config, metadata, captions, log
        self.folder = workdir / "progress"
        self.metrics = workdir / "metrics.jsonl"
        self._said: set[str] = set()  # renderer messages already logged

    def _log_once(self, message: str) -> None:
        """The renderer's message (title characters no font has), logged for the first GIF only: every
        progress GIF draws the same captions (its path and the step in its titles differ; a key of the
        message's text had logged it for every GIF)."""
        if not self._said:
            self._said.add(message)
            self.log(f"{message} (said for the first progress GIF only: they all draw these captions)")

    def __call__(self, step: int, ema: Any) -> None:
        from motion_ddpm_jax import render, sampling

        gif = self.folder / f"step_{step:07d}.gif"
        try:
            self.folder.mkdir(exist_ok=True)
            if self.metrics.is_file():
                render.plot_training_curves(self.metrics, self.folder / "curves.png", overwrite=True)
            if gif.exists() or not self.captions:
                return  # rendered before this run was resumed
            loaded = sampling.loaded_from_params(ema, self.metadata, step, "the training run's EMA")
            if sampling.joint_parents(loaded) is None:
                return  # nothing to draw (said at the start)
            sample = self.config.sample
            frames = min(int(sample.num_frames), loaded.max_motion_length)
            with warnings.catch_warnings():  # progress pictures: not a warning at each of them
                warnings.simplefilter("ignore", sampling.CaptionCutWarning)
                out = sampling.generate(loaded, self.captions, frames, **sampling.sampler_settings(sample))
            positions = [p[:n] for p, n in zip(out["positions"], out["lengths"], strict=True)]
            # the step in each panel's title (a figure leaves the file name behind), first: a title too long
            # for its panel is cut at its end
            titles = [f"step {step}: {caption}" for caption in self.captions]
            parents = sampling.joint_parents(loaded)
            mirrored = humanml3d.is_mirrored(loaded.representation, loaded.model.input_feats)  # KIT-ML
            render.animate_skeletons(
                positions,
                parents,
                gif,
                fps=loaded.fps,
                titles=titles,
                log=self._log_once,
                mirrored=mirrored,
                camera=str(sample.get("camera", "auto")),
            )
            self._say_size(step, loaded, out)  # after the picture: nothing here may cost it
        except Exception as error:  # noqa: BLE001 -- a picture must never cost a run
            self.log(f"step {step}: rendering progress samples failed ({type(error).__name__}: {error})")

    def _say_size(self, step: int, loaded, out: dict[str, Any]) -> None:
        """A line where the progress samples' figures are implausibly sized for the data (the GIF scales
        itself to them): `sampling.check_figure_size`'s judgement, said as a note of the run's progress
        (an early model's often are) rather than as its warning, which advises on a sampling."""
        from motion_ddpm_jax import sampling

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sampling.FigureSizeWarning)
            sizes = [size for size in sampling.check_figure_size(out, loaded) if size is not None]
        if not sizes or all(size["plausible"] for size in sizes):
            return
        ratios = [size["ratio"] for size in sizes if size["ratio"] is not None]
        low, high = (f"{min(ratios):.3g}", f"{max(ratios):.3g}") if ratios else ("", "")
        said = f"{low if low == high else f'{low}-{high}'}x the data's" if ratios else "not finite"
        if ratios and len(ratios) < len(sizes):
            said += f" ({len(sizes) - len(ratios)} not finite)"
        if sizes[0]["measure"].startswith("RMS root step"):  # rotation data: its bones are the data's
            off = sum(not size["plausible"] for size in sizes)
            self.log(
                f"step {step}: the progress samples' {sizes[0]['measure']} is {said}, beyond "
                f"{sampling.SPEED_FACTOR:g}x in {off} of {len(sizes)}: the model does not move as the data "
                "do yet"
            )
            return
        self.log(
            f"step {step}: the progress samples' {sizes[0]['measure']} is {said} (the GIF scales itself to "
            "its figures): the model does not draw the data's figures yet"
        )


class _PreemptionFlag:
    """SIGTERM (a scheduler preempting the job) or a first Ctrl-C (SIGINT) once the loop runs sets a flag;
    the loop saves a checkpoint and returns. A Ctrl-C during the set-up, or a second one, raises
    KeyboardInterrupt at once (Python's default). A signal ignored where the process started stays so.

    With several processes they must stop at the same step: the flag is then compared across processes
    (an all-gather) every `log_every` steps, where the host synchronises anyway; one process alone checks
    it every step.
    """

    def __init__(self):
        self.raised = False
        self.name = None  # of the signal this process got, if any
        self.training = False  # set when the loop starts: a Ctrl-C before it stops at once
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                if signal.getsignal(sig) != signal.SIG_IGN:  # ignored where started (`cmd &`): left so
                    self.previous[sig] = signal.signal(sig, self._handle)
        if distributed.take_held_sigterm():  # sent since launch.py's join (`distributed.hold_sigterm`)
            self.raised, self.name = True, "SIGTERM"

    def _handle(self, signum, frame):
        if signum == signal.SIGINT:  # the next Ctrl-C stops at once, without a checkpoint
            signal.signal(signal.SIGINT, self.previous.get(signal.SIGINT) or signal.default_int_handler)
            if not self.training:  # setting up: nothing to save, and a user stopping a wrong start
                raise KeyboardInterrupt
            os.write(
                2,
                b"Ctrl-C: stopping with a checkpoint at the next step the processes agree on; Ctrl-C again "
                b"stops at once (the last checkpoint stays)\n",
            )
        self.raised = True
        self.name = self.name or ("Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)

    def agreed(self, step: int, every: int) -> bool:
        if jax.process_count() == 1:
            return self.raised
        if step % max(int(every), 1):
            return False
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.array(self.raised))))

    def restore(self) -> None:
        for sig, previous in self.previous.items():
            if distributed.is_sigterm_holder(previous):  # launch.py's, for the set-up only
                previous = signal.SIG_DFL
            if previous is not None:
                signal.signal(sig, previous)
        self.previous = {}


def bottleneck_warning(config, feature_size: int) -> str | None:
    """A warning when the model's width cannot carry what it must predict: with epsilon or v prediction
    the network has to reproduce D-dimensional noise through a `latent_dim`-wide residual stream, which it
    cannot when latent_dim < D (the loss stalls near (D - latent_dim) / D and sampling diverges)."""
    latent = int(config.model.latent_dim)
    if config.diffusion.prediction in ("epsilon", "v") and latent < feature_size:
        return (
            f"warning: model.latent_dim={latent} is below the {feature_size} motion features, so "
            f"diffusion.prediction={config.diffusion.prediction} cannot reproduce the noise (the loss will "
            f"stall near {(feature_size - latent) / feature_size:.2f} and samples diverge); use "
            f"latent_dim >= {feature_size} or diffusion.prediction=x0"
        )
    return None


def geometric_unit_warning(config, dataset: motion_text.MotionTextDataset) -> str | None:
    """A warning when the geometric loss (units^2) of a figure in metres or millimetres
    (`motion_text.figure_unit`) is weighed by loss.geometric_weight's default (0.01), which is set for
    centimetres: 10^4 times less, or 100 times more, than in centimetres. Prepare and write_dataset say so
    once, when the data are written; a run that trains with the default says it again. None where the
    weight was changed or nothing applies."""
    default = config_lib.base_config().loss.geometric_weight
    skeleton = dataset.skeleton
    if (
        skeleton is None
        or dataset.representation == "humanml3d"  # (no skeleton: none of its features are posed)
        or not config.loss.use_geometric_loss
        or float(config.loss.geometric_weight) != default
    ):
        return None
    extent, unit, weight = motion_text.figure_unit(skeleton)
    if unit is None:
        return None
    return (
        f"warning: the data's skeleton spans {extent:.3g} units, a figure in {unit}, and the geometric loss "
        f"(units^2) is weighed by loss.geometric_weight={default:g}, set for centimetres: "
        f"--config.loss.geometric_weight={weight} weighs it as in centimetres"
    )


SHARED_CHECK = ".shared-check-"  # the file check_processes_agree writes and removes (a kill may leave it)


def _broadcast_text(text: str) -> str:
    """Process 0's `text` on every process (a collective: every process calls it). A file name's
    undecodable bytes (surrogate escapes) travel as they are."""
    from jax.experimental import multihost_utils

    payload = np.frombuffer(text.encode("utf-8", "surrogateescape"), np.uint8)
    length = int(multihost_utils.broadcast_one_to_all(np.int32(len(payload))))
    buffer = payload if jax.process_index() == 0 else np.zeros(length, np.uint8)
    received = np.asarray(multihost_utils.broadcast_one_to_all(buffer), np.uint8)
    return bytes(received).decode("utf-8", "surrogateescape")


def check_processes_agree(config, workdir: Path) -> None:
    """In a multi-process run (a collective: every process calls it, first of all): UserError unless every
    process was given process 0's config (distributed.* aside, which is each machine's own), naming the
    fields that differ; WorkdirError unless `workdir` is one folder that every process sees, checked by a
    file process 0 writes in it (or, before it exists, in its nearest existing parent) and removes. Either
    had gone unnoticed: the processes trained different models under one checkpoint, or wrote checkpoints
    nobody else could read (a requeue then took them for damaged). Every process goes through every
    collective whatever its file system says (an error between them would leave the others waiting)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    mine = {k: repr(v) for k, v in config_lib.flatten(config).items() if not k.startswith("distributed.")}
    theirs = json.loads(_broadcast_text(json.dumps(mine, sort_keys=True)))  # (ASCII: escapes as it must)
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    folder, missing = None, ""
    with contextlib.suppress(OSError):  # (a folder that cannot be read: the file is not seen)
        folder = next(p for p in (workdir.absolute(), *workdir.absolute().parents) if p.is_dir())
        missing = str(workdir.absolute().relative_to(folder))  # '.' where the workdir exists
    token = _broadcast_text(f"{SHARED_CHECK}{os.getpid()}-{time.time_ns()}")  # process 0's name
    given = _broadcast_text(str(workdir.absolute()))  # process 0's --workdir: named where it differs
    same_place = _broadcast_text(missing) == missing  # (else another folder under a shared parent)
    written = False
    if jax.process_index() == 0 and folder is not None:
        with contextlib.suppress(OSError):  # a folder process 0 cannot write in: nothing to compare
            (folder / token).write_bytes(b"")
            written = True
    multihost_utils.sync_global_devices("motion_ddpm_jax: shared-folder check written")
    seen = False
    with contextlib.suppress(OSError):
        seen = folder is not None and same_place and (folder / token).is_file()
    flags = np.asarray(multihost_utils.process_allgather(np.array([bool(differ), seen, written], np.int32)))
    multihost_utils.sync_global_devices("motion_ddpm_jax: shared-folder check read")
    if written:
        with contextlib.suppress(OSError):
            (folder / token).unlink()
    flags = flags.reshape(jax.process_count(), 3)
    others = [int(p) for p in np.flatnonzero(flags[:, 0])]
    if others:
        shown = "; ".join(
            f"{k}: {theirs.get(k, '(none)')} on process 0, {mine.get(k, '(none)')} here" for k in differ[:8]
        )
        raise UserError(
            f"process(es) {', '.join(map(str, others))} of this run were given another config than process 0 "
            f"({shown or 'their logs name the fields'}); start every process with the same --config and "
            "--config.* overrides (only distributed.* may differ)"
        )
    blind = [int(p) for p in np.flatnonzero(flags[:, 1] == 0)]
    if flags[0, 2] and blind:
        named = str(workdir.absolute())
        other = (
            f" (process 0 was given --workdir {given}, this process {named}: give every process the same one)"
            if given != named
            else ""
        )
        raise WorkdirError(
            f"--workdir {workdir} is not one folder shared by the run's processes: process(es) "
            f"{', '.join(map(str, blind))} do not see the file process 0 wrote in {folder}{other}. Every "
            "process reads and writes the same checkpoints: put the workdir on a file system all hosts mount"
        )


def check_batch_divides(batch_size: int, device_count: int, whose: str = "") -> None:
    """UserError where train.batch_size does not split evenly over the devices of every process: each
    device trains on an equal share of a step's batch. `whose` says whose devices were counted (--mode
    config counts those of the machine it runs on)."""
    if batch_size % device_count:
        raise UserError(
            f"train.batch_size={batch_size} must be divisible by the number of devices, {device_count}"
            f"{whose}; set --config.train.batch_size to a multiple of it"
        )


def _dataset_once_per_run(config, log):
    """The dataset; in a multi-process run, process 0 prepares a missing cache while the others wait. Where
    a process cannot open it (any error: a missing folder, a full disk), every process raises: each goes
    through the same two collectives whatever happened (the others had waited until JAX aborted)."""
    if jax.process_count() == 1:
        return beat.dataset_from_config(config, log=log)
    from jax.experimental import multihost_utils

    dataset, error = None, None
    if jax.process_index() == 0:
        try:
            dataset = beat.dataset_from_config(config, log=log)
        except Exception as raised:  # noqa: BLE001 - said to the others, then raised as it is
            error = raised
    failed_first = "" if error is None else (str(error) or type(error).__name__)
    said = _broadcast_text(failed_first)  # also the barrier: the cache is ready
    if dataset is None and not said and error is None:
        try:
            dataset = beat.dataset_from_config(config, log=lambda *_: None)
        except Exception as raised:  # noqa: BLE001
            error = raised
    failed = np.asarray(multihost_utils.process_allgather(np.int32(error is not None))).reshape(-1)
    if error is not None:
        raise error
    if said:
        raise UserError(f"process 0 could not open the data: {said}")
    if failed.any():
        others = ", ".join(str(int(p)) for p in np.flatnonzero(failed))
        raise UserError(f"process(es) {others} could not open the data (their logs say why)")
    return dataset


def run(config, workdir: str | os.PathLike, log=print) -> dict[str, Any]:
    """Train `config` in `workdir` (resuming from its latest checkpoint); returns a summary.

    Data-parallel over the local devices with `jax.pmap`; every process of a multi-host run feeds its
    own shard of the global batch, and only process 0 writes logs. The config is checked first
    (`config.validate`, as launch.py does): a field out of its bounds raises UserError naming it before the
    workdir is touched (unchecked, it failed inside jax after run.json had recorded it, and that record
    then refused the corrected config in the same workdir).

    The summary: `steps` (the run's length: train.num_steps, or train.num_epochs' steps), `stopped_at`
    (the step a SIGTERM or Ctrl-C stopped it at, None where it ran to the end), `workdir`, and
    `final_metrics`: the last row this call wrote to metrics.jsonl, as floats without its `step` (the means
    over the row's steps, as the console and TensorBoard show them; None where the call wrote no row: it
    trained no step, or was stopped before its first train.log_every steps were done).
    """
    stop = _PreemptionFlag()  # from the start: a SIGTERM during set-up stops at the first step boundary
    try:
        with contextlib.ExitStack() as held:
            return _run(config, Path(workdir), stop, held, log)
    finally:
        stop.restore()


def _run(config, workdir: Path, stop: _PreemptionFlag, held: contextlib.ExitStack, log) -> dict[str, Any]:
    is_main = jax.process_index() == 0
    check_processes_agree(config, workdir)  # first: a config refused below would be refused by all
    trained_before = last_trained_config(workdir)  # its values pass as they are (validate's `trained`)
    config_lib.validate(config, None if trained_before is None else trained_before[1])
    needs_record = claim_workdir(workdir, config)
    if jax.process_count() > 1:  # every process has checked the workdir before any of them writes to it
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("motion_ddpm_jax: workdir checked")

    # What the config can get wrong against the data and the machine is checked before the workdir is
    # written to: its run record would otherwise tie the workdir to a config that never trained a step,
    # and refuse the corrected one (`claim_workdir`).
    devices = jax.local_device_count()
    global_batch = int(config.train.batch_size)
    check_batch_divides(global_batch, devices * jax.process_count())  # before the data: no minutes of it
    dataset = _dataset_once_per_run(config, log)
    split = dataset.split("train")
    captions = [caption for clip in split.captions for caption in clip]  # every caption, flat
    if is_main and (left_out := motion_text.describe_dropped(dataset, [split])):
        log(left_out)
    if config.model.input_feats:
        dataset.check_feature_size(config.model.input_feats)
    geometry = make_geometry(config, dataset)
    # A first start's source (train.init_from) is read and checked before the workdir is written to: a
    # refused one leaves nothing behind, and no checkpoint manager is opened on a folder that the refusal
    # then removes (Orbax's background clean-up had listed the removed folder: a traceback under the
    # refusal, in 2 of 10 starts).
    init = None
    if config.train.init_from and not _holds_a_checkpoint(workdir):
        init = load_init_from(config, dataset, captions, workdir, log if is_main else lambda line: None)

    refused_start = {"made": not workdir.exists(), "recorded": not needs_record}
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        if is_main:  # before the checkpointer, which removes unfinished checkpoints when it opens the folder
            held.enter_context(workdir_lock(workdir))
    except OSError as error:  # a read-only copy of a run, a colleague's folder, a read-only mount
        if not isinstance(error, PermissionError) and error.errno != errno.EROFS:
            raise
        raise WorkdirError(
            f"--workdir {workdir}: cannot write there ({error.strerror}: {error.filename}); training writes "
            "its lock, checkpoints and logs into the workdir: give a --workdir you can write to (to resume "
            f"a read-only run, copy it to a folder of yours and make the copy writable: `cp -a {workdir} "
            "<copy> && chmod -R u+w <copy>`, as cp keeps the run's read-only modes, then --workdir <copy>; "
            "sampling and eval read one as it is, with --config.sample.output_dir or --config.eval.output)"
        ) from None
    if is_main:
        held.callback(_tidy_a_refused_start, workdir, refused_start)  # runs while the lock is still held
    ckpt = checkpoint.Checkpointer(workdir, max_to_keep=config.train.max_to_keep)
    resume_step = ckpt.latest_step()
    # A checkpoint folder renamed (checkpoints/20 -> best) is invisible to Orbax: resuming from an earlier
    # step, or from step 0, would drop the run's metrics.jsonl rows and TensorBoard events past it and save
    # its own checkpoints beside it. Refused before anything is written where it holds a later step (or
    # its step cannot be read and there is no readable one); a renamed copy of a step that is there (cp -r
    # 20 best) is no matter. One whose step cannot be read (no train_state: a sampling copy; a damaged one)
    # cannot be resumed from either, renamed or not: beside a readable step it is noted, not refused.
    found = checkpoint.misnamed_checkpoints(ckpt.directory, ckpt.all_steps())
    misnamed = [
        (folder, step)
        for folder, step in found
        if resume_step is None or (step is not None and step > resume_step)
    ]
    if misnamed:
        ckpt.close()
        start = (
            "no checkpoint to resume from"
            if resume_step is None
            else f"its latest checkpoint is step {resume_step}"
        )
        anew = "anew from step 0" if resume_step is None else f"from step {resume_step}"
        raise WorkdirError(
            f"--workdir {workdir}: {start}, but {checkpoint.misnamed_note(ckpt.directory, misnamed)}, to "
            f"resume from it; or move it out of {ckpt.directory} to go on {anew}"
        )
    unread = [folder.name for folder, step in found if step is None]
    if is_main and resume_step is not None and unread:
        log(
            f"note: {ckpt.directory} holds folders like a checkpoint under names that are not a step "
            f"({', '.join(unread[:5])}{' ...' if len(unread) > 5 else ''}) whose train_state's step cannot "
            f"be read (none saved, a damaged one, another program's): no step to resume from; this run goes "
            f"on from its checkpoint {resume_step}"
        )
    saved = ckpt.restore_metadata(resume_step) if resume_step is not None else None
    statistics = None  # (mean, std) where the run normalises with others than the data's
    if saved is not None:
        init = None  # (a checkpoint written since the source was read, by a run that shared the workdir)
        # Past claim_workdir, a checkpoint whose config differs from the run record's was put there from
        # elsewhere; a run from before run records (needs_record) has none: its difference is this config's.
        copied = None if needs_record else f"{ckpt.directory}/{resume_step}"
        check_resumable(saved, config, workdir, copied)
        check_same_data(saved, dataset, workdir)
        tokenizer = text.Tokenizer.from_dict(saved["tokenizer"], source=f"{workdir} checkpoint metadata")
        if saved.get("init_from"):  # it normalises with the statistics of the run it started from
            statistics = (np.asarray(saved["mean"], np.float32), np.asarray(saved["std"], np.float32))
    elif init is not None:
        tokenizer, statistics = init.tokenizer, (init.mean, init.std)
    else:
        tokenizer = text.Tokenizer.build(captions)
    if statistics is not None and geometry is not None:
        geometry = make_geometry(config, dataset, statistics)
    # What this start changes of the run's settings (train.*, sample.*, eval.*, data paths), old -> new:
    # a resume with --config takes them from the file, which may lack the first command line's overrides.
    if is_main and (saved is not None or not needs_record):
        if saved is not None:
            where, recorded = f"latest checkpoint (step {resume_step})", saved["config"]
        else:
            where, recorded = (
                f"run record ({RUN_RECORD}; no checkpoint yet)",
                read_run_record(workdir / RUN_RECORD),
            )
        if changes := changed_settings(recorded, config):
            log(changes_line(where, changes))
            if saved is not None and {"train.init_from", "train.init_weights"} & {c[0] for c in changes}:
                log(
                    "train.init_from and train.init_weights are read at a run's first start only: this run "
                    f"goes on from its own checkpoint {resume_step}"
                )
    try:  # the config against the data: refused here, before the run record ties the workdir to it
        source = pipeline.BatchSource(
            split,
            *(statistics or (dataset.mean, dataset.std)),
            tokenizer,
            global_batch_size=global_batch,
            max_motion_length=config.data.max_motion_length,
            max_text_length=config.model.text_max_length,
            seed=config.seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            min_motion_length=config.data.min_motion_length,
            spell_prob=config.data.spell_prob,
        )
        model = model_lib.model_from_config(
            config, input_feats=dataset.feature_size, text_vocab_size=tokenizer.vocab_size
        )
    except ValueError as error:
        raise UserError(f"the config does not fit the data at {dataset.root}: {error}") from None
    if is_main and (
        cut := cut_captions_note(
            captions,
            tokenizer,
            config.model.text_max_length,
            fine_tuning=init is not None or bool((saved or {}).get("init_from")),
        )
    ):
        log(cut)
    if is_main and global_batch > source.num_clips:
        log(
            f"train.batch_size={global_batch} is more than the {source.num_clips} clips of the training "
            f"split: every batch holds each clip about {global_batch / source.num_clips:.2g} times (other "
            "windows and captions), and an epoch (train.num_epochs) is one step"
        )
    # Read once, at the start: the software this process runs (a later edit of the checkout is not its code).
    software = provenance.software(jax.local_devices()[0])
    if is_main and needs_record:
        write_run_record(workdir, config, software)
        refused_start["recorded"] = True
    steps = total_steps(config.train, source.steps_per_epoch)
    warmup = warmup_steps(config.optim, source.steps_per_epoch)
    train_clips = train_clips_record(source, split)  # (each checkpoint records it; a resume compares)
    if is_main:  # what is trained on, said once: prepare says it only when it prepares
        log(
            f"data: {dataset.root}: {source.num_clips} training clips of {dataset.representation} motion "
            f"({dataset.feature_size} features at {float(dataset.fps):g} fps), windows of up to "
            f"{config.data.max_motion_length} frames; {steps} steps of {global_batch}: about "
            f"{steps * global_batch / source.num_clips:.3g} epochs, {warmup_note(warmup, steps)}"
            + epoch_count_note(config.train, source.num_clips, global_batch)
        )
    lr_schedule = learning_rate_schedule(config.optim, steps, warmup)
    optimizer, ema = make_optimizer(config.optim, lr_schedule), make_ema(config.optim)
    warning = bottleneck_warning(config, dataset.feature_size)
    if warning and is_main:
        log(warning)
    if (warning := geometric_unit_warning(config, dataset)) and is_main:
        log(warning)
    params = model_lib.init_params(model, jax.random.key(config.seed)) if init is None else init.params
    # One program for the optimizer's and the EMA's zeros, not one eager fill per leaf shape.
    state = jax.jit(lambda p: create_train_state(p, optimizer, ema, config.seed))(params)
    if resume_step is not None:
        like = {"params": state.params, "train_state": state.replace(params=None)}
        _, restored = ckpt.restore_run(resume_step, like)
        state = restored["train_state"].replace(params=restored["params"])
        if int(state.step) != resume_step:  # another run's checkpoint renamed, or copied under this name
            raise ckpt.damaged(
                resume_step,
                ValueError(f"its train_state is at step {int(state.step)}"),
                "is not the checkpoint its folder's name says",
            )
        if is_main:
            log(f"resumed from {ckpt.directory}/{resume_step} (step {int(state.step)} of {steps})")
            if int(config.seed) >= 2**32:  # validate lets such a run go on (an earlier version started it)
                log(
                    f"seed {int(config.seed)} draws the JAX keys (initial parameters, noise, caption "
                    f"dropout) of seed {int(config.seed) % 2**32}: JAX takes a seed's low 32 bits (64-bit "
                    "numbers off), as this run has since its start; its batches follow the whole seed"
                )
        changed = provenance.changed_software(saved.get("software"), software, f"checkpoint {resume_step}")
        if changed and is_main:
            log(changed)  # (a checkpoint from before the record says nothing)
        at = int(state.step)
        if at >= steps:  # before the notes on how the steps to come train: none will
            if is_main:
                log(
                    f"the run is already at step {at}, at or past its {steps} steps: nothing "
                    "to train (raise --config.train.num_steps or num_epochs to continue it)"
                )
            ckpt.close()
            return {"steps": steps, "stopped_at": None, "final_metrics": None, "workdir": str(workdir)}
        saved_warmup = warmup_steps(config.optim, int(saved.get("steps_per_epoch", source.steps_per_epoch)))
        count = at - int(nonfinite_counts(state.opt_state)[1])  # the schedule's: skipped steps excluded
        if is_main and saved.get("total_steps") != steps:
            jump = ""
            if isinstance(saved.get("total_steps"), int) and saved["total_steps"] >= 1:
                was = learning_rate_schedule(config.optim, saved["total_steps"], saved_warmup)
                jump = (
                    f", so step {at + 1} trains at lr {float(learning_rate_at(lr_schedule, count)):.3g} "
                    f"where the run's schedule gave {float(learning_rate_at(was, count)):.3g}"
                )
            log(
                f"the run's length changed from {saved.get('total_steps')} to {steps} steps: the learning"
                f"-rate schedule is recomputed for the new length{jump}; the run will not equal one started "
                f"with {steps} steps (to stop a run and resume it exactly, stop it with SIGTERM or Ctrl-C)"
            )
        saved_batch = int(saved["config"].get("train", {}).get("batch_size", global_batch))
        if is_main and saved_batch != global_batch:
            seen = at * saved_batch / source.num_clips
            epochs = (
                f"; train.num_epochs={config.train.num_epochs} now counts steps of {global_batch}, so the "
                f"run ends after about {seen + (steps - at) * global_batch / source.num_clips:.3g} epochs"
                if config.train.num_steps <= 0
                else ""
            )
            log(
                f"train.batch_size changed from {saved_batch} to {global_batch}: a step's clips follow step "
                f"x batch size, so step {at + 1} reads from epoch {at * global_batch / source.num_clips:.3g} "
                f"of the data order where the run had reached epoch {seen:.3g}{epochs}"
            )
        if is_main and (note := train_clips_note(saved, train_clips, at)):
            log(note)
        topology = _topology()
        if is_main and all(k in saved for k in topology) and any(saved[k] != v for k, v in topology.items()):
            log(
                f"the devices changed since checkpoint {resume_step} was saved: {saved['process_count']} "
                f"process(es), {saved['device_count']} device(s) -> {topology['process_count']}, "
                f"{topology['device_count']}; the batch's mean over devices may sum in another order, so the "
                "run may go on equal to float rounding only, not bitwise (--host_devices, or the GPUs a job "
                "gets)"
            )
        backend = (saved.get("software") or {}).get("backend")
        if is_main and (
            note := precision_change(config.model.compute_dtype, backend, jax.default_backend(), resume_step)
        ):
            log(note)
        if is_main and saved_warmup != warmup:
            log(
                f"the warmup changed from {saved_warmup} to {warmup} steps: optim.warmup_steps=-1 follows "
                f"the epoch's length, {saved.get('steps_per_epoch')} steps then and {source.steps_per_epoch} "
                "now (train.batch_size or the data changed)"
            )

    schedule = diffusion.make_schedule(config.diffusion.schedule, config.diffusion.steps)
    empty = tuple(a[0] for a in tokenizer.encode([""], config.model.text_max_length))
    step_fn = make_train_step(model, config, schedule, lr_schedule, optimizer, ema, empty, geometry)
    p_step = jax.pmap(step_fn, axis_name="batch", donate_argnums=(0,))

    # A resumed run started from another's weights goes on recording where from (and its data's statistics).
    started_from = init.record if init is not None else (saved or {}).get("init_from")
    # ... and the train.init_from and train.init_weights it started with: a resume reads neither, and its
    # checkpoints' config had named a source that gave none of their weights (`--mode config` showed it).
    recorded = config
    if saved is not None:
        first = saved["config"].get("train", {})
        recorded = config.copy_and_resolve_references()
        recorded.train.init_from = str(first.get("init_from", ""))
        recorded.train.init_weights = str(first.get("init_weights", "ema"))
    metadata = run_metadata(
        recorded,
        dataset,
        tokenizer,
        steps,
        source.steps_per_epoch,
        software,
        started_from,
        statistics,
        train_clips,
    )
    sample_every = int(config.train.sample_every)
    progress = None
    if sample_every and is_main and jax.process_count() == 1:
        progress = ProgressRenderer(config, workdir, metadata, progress_captions(config, dataset), log)
        if cut := progress_cut_note(progress.captions, tokenizer, int(config.model.text_max_length)):
            log(cut)
        if config.sample.num_frames > config.data.max_motion_length:
            log(
                f"train.sample_every: progress samples are {config.data.max_motion_length} frames long, "
                f"the most the model takes (data.max_motion_length), not sample.num_frames="
                f"{config.sample.num_frames}"
            )
        if dataset.skeleton is None and not humanml3d.is_layout(dataset.representation, dataset.feature_size):
            log(
                f"train.sample_every: the {dataset.representation} data have no skeleton to draw, so "
                "progress/ gets the training curves only, no sample GIFs"
            )
    elif sample_every and jax.process_count() > 1:
        log("train.sample_every: progress samples are rendered only in single-process runs")
    if progress is not None and resume_step and resume_step % sample_every == 0:
        # Those of the step resumed from, where a kill came while they were drawn (after its checkpoint);
        # the renderer leaves drawn ones alone.
        progress(resume_step, ema_params(state.ema_state, config.optim, state.params))

    def save(step_state):
        host_state = first_replica(step_state)
        ckpt.save(
            int(host_state.step),
            host_state.params,
            ema_params(host_state.ema_state, config.optim, host_state.params),
            host_state.replace(params=None),
            {**metadata, "log_window": window_record(window)},
        )

    # Placed on the devices the way the step returns it, so that the step compiles once (called first with
    # host arrays and then with its own outputs, it would compile twice).
    replicated = jax.pmap(lambda tree: tree, axis_name="batch")(replicate(state, devices))
    base_rng = replicate(state.rng, devices)
    first = int(state.step)
    metrics_log = MetricsLog(workdir, steps, is_main, first_step=first, log=log)
    if is_main and resume_step is not None and (note := earlier_rows_note(saved, first, metrics_log.path)):
        log(note)
    save_every = int(config.train.save_every_steps)
    save_epochs = int(config.train.save_every_epochs) * source.steps_per_epoch
    last_log_time, last_log_step = time.perf_counter(), first
    # Seconds of the current log window spent compiling, saving and drawing progress samples: left out of
    # its steps/s, which would otherwise swing with whether a window holds a checkpoint.
    paused = 0.0
    last_saved = resume_step
    last_row = None  # the last metrics.jsonl row written: what the summary returns
    # The step metrics since the last row (on the devices until the row: no wait per step); a resume
    # between two rows starts with those its checkpoint kept.
    window = restored_window(saved) if resume_step is not None else []
    stop.training = True
    for step in range(first, steps):
        if stop.agreed(step, config.train.log_every):
            if last_saved != step:
                save(replicated)
            by = stop.name or "another process's SIGTERM or Ctrl-C"
            before = ", before training a step" if step == first else ""
            log(
                f"stopped by {by} at step {step} of {steps}{before}: checkpoint saved in "
                f"{ckpt.directory}/{step}"
            )
            ckpt.close()
            metrics_log.close()
            return {"steps": steps, "stopped_at": step, "final_metrics": last_row, "workdir": str(workdir)}
        batch = pipeline.shard_for_devices(source.batch(step), devices)
        batch = {k: batch[k] for k in ("motion", "mask", "tokens", "text_mask")}
        if step == first:  # the call returns once the step is compiled; it runs asynchronously
            log(
                f"preparing the train step for {devices} {jax.default_backend()} device(s): compiled "
                "(minutes on a GPU) or loaded from the compilation cache"
            )
            started = time.perf_counter()
        replicated, metrics = p_step(replicated, batch, base_rng)
        window.append(metrics)
        done = step + 1
        if step == first:
            # Waited for: its first run sets up the program's buffers and threads (0.2 s of a tiny model's
            # 7 ms steps on 2 CPU cores), no more training speed than the compiling is. The first window's
            # steps/s counts the steps after it (none where log_every is 1: not a number then).
            jax.block_until_ready(replicated)
            ready = time.perf_counter()
            log(f"train step ready in {ready - started:.1f} s")
            last_log_time, last_log_step, paused = ready, done, 0.0
        if done % config.train.log_every == 0 or done == steps:
            # The steps run asynchronously: without this wait the clock would stop once they are queued,
            # not run (a first window read 30-58 steps/s against 5 on 2 CPU cores, and the next ones the
            # slower for the work it left them). The row fetches their metrics next anyway.
            jax.block_until_ready(replicated)
            now = time.perf_counter()
            measured = done - last_log_step
            rate = measured / max(now - last_log_time - paused, 1e-9) if measured else float("nan")
            last_log_time, last_log_step, paused = now, done, 0.0
            consecutive = int(first_replica(replicated.opt_state.notfinite_count))
            values, window = window_means(window), []
            values.update(steps_per_s=rate, samples_per_s=rate * global_batch)
            metrics_log.write(done, values)
            last_row = values
            if consecutive >= config.train.max_consecutive_nonfinite:
                kept = (
                    "no checkpoint was saved before them"
                    if last_saved is None
                    else f"the checkpoint of step {last_saved} in {ckpt.directory} is intact"
                )
                raise FloatingPointError(
                    f"step {done}: the last {consecutive} steps had non-finite gradients and were "
                    f"skipped; stopping ({kept}). A lower optim.lr is a new run: use a new --workdir"
                )
        if (
            (save_every and done % save_every == 0)
            or (save_epochs and done % save_epochs == 0)
            or done == steps
        ):
            jax.block_until_ready(replicated)  # the steps before it are training time, not the save's
            began = time.perf_counter()
            save(replicated)
            last_saved = done
            paused += time.perf_counter() - began
        if progress is not None and (done % sample_every == 0 or done == steps):
            jax.block_until_ready(replicated)
            began = time.perf_counter()
            ema_state, params = first_replica((replicated.ema_state, replicated.params))
            progress(done, ema_params(ema_state, config.optim, params))
            paused += time.perf_counter() - began
    ckpt.close()
    metrics_log.close()
    return {"steps": steps, "stopped_at": None, "final_metrics": last_row, "workdir": str(workdir)}
