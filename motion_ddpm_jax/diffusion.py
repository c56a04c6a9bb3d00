"""Gaussian diffusion maths: schedules, forward noising, prediction conversions, DDPM, DDIM and
DPM-Solver++(2M) sampling.

Pure functions of float32 arrays. Conventions (Ho et al. 2020; Nichol & Dhariwal 2021; Song et al. 2021):
  x_t = sqrt(abar_t) * x0 + sqrt(1 - abar_t) * eps,   t in [0, num_steps), abar_t = prod_{s<=t} (1 - beta_s)
  v   = sqrt(abar_t) * eps - sqrt(1 - abar_t) * x0
Data have any rank `[B, ...]` (motion is `[B, T, D]`); timesteps are `t: i32[B]`, one per example.
The model predicts one of PREDICTION_KINDS; every sampler converts it to an x0 estimate first.
"""

import dataclasses
import numbers
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

SCHEDULE_NAMES = ("linear", "cosine")
PREDICTION_KINDS = ("epsilon", "x0", "v")

DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]  # (x_t: [B, ...], t: i32[B]) -> model output [B, ...]


@dataclasses.dataclass(frozen=True)
class PreparedDenoiser:
    """A denoiser split by what its work depends on, for the sample loops (they accept it for a DenoiseFn).

    prepare(timesteps i32[K]) -> a pytree whose leaves have leading axis K: everything that depends on
    the step but not on x_t, for K steps at once (for the MotionTransformer, the time embedding and every
    block's (scale, shift): a few large matmuls instead of K weight-bound ones).
    apply(x_t [B, ...], t i32[B], prepared) -> the model output, `prepared` being one step's slice.
    The loops split the steps into the fewest chunks of at most `chunk` steps, as equal as possible
    (`_chunking`: 51 steps with chunk 50 are 2 chunks of 26, the last holding one padding step after the
    final one, skipped with `lax.cond`), call `prepare` once per chunk, then `apply` every step;
    the result is the same as with the DenoiseFn x_t, t -> apply(x_t, t, prepare(t[:1]) sliced).
    """

    prepare: Callable[[jax.Array], Any]
    apply: Callable[[jax.Array, jax.Array, Any], jax.Array]
    chunk: int = 50

    def __call__(self, x_t: jax.Array, t: jax.Array) -> jax.Array:
        """As a plain DenoiseFn (t must be one step for the whole batch: its first entry is used)."""
        prepared = self.prepare(t[:1])
        return self.apply(x_t, t, jax.tree.map(lambda leaf: leaf[0], prepared))


def _chunking(num_steps: int, chunk: int) -> tuple[int, int]:
    """(chunks, size): the fewest chunks of at most `chunk` steps, as equal as possible."""
    chunks = -(-num_steps // max(1, int(chunk)))
    return chunks, -(-num_steps // chunks)


def _run_steps(denoise_fn, update, state: Any, per_step: tuple[np.ndarray, ...], x_of=None) -> Any:
    """state <- update(state, model_output, *inputs_i) over the steps i, in `lax.scan`s.

    state: the loop's carry: x itself, or a pytree holding it (a multistep solver keeps earlier estimates
    beside x) from which x_of(state) takes x [B, ...]. per_step: numpy arrays [N] (the step index, the
    timestep, then whatever `update` takes); the model output is denoise_fn(x, full(B, timestep)).
    A PreparedDenoiser runs as an outer scan over chunks (`prepare` on each chunk's timesteps) around an
    inner scan over the chunk's steps. Returns the final state.
    """
    x_of = x_of or (lambda carried: carried)
    batch = x_of(state).shape[0]

    def timestep(inputs):
        return jnp.full((batch,), inputs[1], jnp.int32)

    if not isinstance(denoise_fn, PreparedDenoiser):

        def step(carried, inputs):
            return update(carried, denoise_fn(x_of(carried), timestep(inputs)), *inputs), None

        return jax.lax.scan(step, state, per_step)[0]

    num_steps = len(per_step[0])
    chunks, size = _chunking(num_steps, denoise_fn.chunk)
    padding = chunks * size - num_steps
    chunked = tuple(np.concatenate([a, np.repeat(a[-1:], padding)]).reshape(chunks, size) for a in per_step)
    real = (np.arange(chunks * size) < num_steps).reshape(chunks, size)

    def chunk_step(carried, chunk_inputs):
        inputs, real_steps = chunk_inputs
        prepared = denoise_fn.prepare(jnp.asarray(inputs[1], jnp.int32))

        def step(carried, step_inputs):
            inputs, is_real, this = step_inputs

            def run(carried):
                return update(carried, denoise_fn.apply(x_of(carried), timestep(inputs), this), *inputs)

            return jax.lax.cond(is_real, run, lambda kept: kept, carried) if padding else run(carried)

        return _scan_slices_ahead(step, carried, (inputs, real_steps, prepared)), None

    return jax.lax.scan(chunk_step, state, (chunked, real))[0]


def _scan_slices_ahead(body: Callable[[Any, Any], Any], carry: Any, xs: Any) -> Any:
    """The final carry of carry <- body(carry, xs[k]) over k, as `lax.scan` (without outputs), where step
    k's slice of xs reaches the body through the loop's carry: each step slices the next step's.

    Same result as scanning over xs. Why: a slice taken at the loop's dynamic index is fused by XLA:CPU
    into every elementwise pass that reads it, which then runs several times slower (a [240, 512]
    modulation pass of the sampler: 0.43 ms instead of 0.07 ms, 10 of a 43 ms step in bf16); a slice
    that leaves the step in its carry is computed once, on its own.
    """
    length = jax.tree.leaves(xs)[0].shape[0]

    def slice_at(k):
        return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(jnp.asarray(a), k, keepdims=False), xs)

    def step(state, k):
        carry, this = state
        return (body(carry, this), slice_at(jnp.minimum(k + 1, length - 1))), None

    first = jax.tree.map(lambda a: jnp.asarray(a)[0], xs)
    return jax.lax.scan(step, (carry, first), jnp.arange(length, dtype=jnp.int32))[0][0]


@flax.struct.dataclass
class Schedule:
    """Per-step diffusion coefficients, each f32[num_steps] (improved-diffusion names)."""

    betas: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array
    sqrt_alphas_cumprod: jax.Array
    sqrt_one_minus_alphas_cumprod: jax.Array
    sqrt_recip_alphas_cumprod: jax.Array
    sqrt_recipm1_alphas_cumprod: jax.Array
    posterior_variance: jax.Array
    posterior_log_variance_clipped: jax.Array
    posterior_mean_coef1: jax.Array
    posterior_mean_coef2: jax.Array

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]


def _linear_betas(num_steps: int) -> np.ndarray:
    """improved-diffusion's linear schedule, rescaled so any num_steps spans the same noise range as 1000."""
    scale = 1000.0 / num_steps
    return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)


def _cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    def alpha_bar(fraction):
        return np.cos((fraction + s) / (1 + s) * np.pi / 2) ** 2

    steps = np.arange(num_steps, dtype=np.float64)
    betas = 1.0 - alpha_bar((steps + 1) / num_steps) / alpha_bar(steps / num_steps)
    return np.minimum(betas, max_beta)


def make_schedule(name: str, num_steps: int) -> Schedule:
    """Schedule `name` in SCHEDULE_NAMES over `num_steps` steps; computed in float64, stored f32.

    linear: betas from 1e-4 to 0.02 (Ho et al.) at 1000 steps, scaled by 1000 / num_steps for other
    lengths (improved-diffusion's rule: the same noise range at any length; needs num_steps > 20).
    cosine: f(u) = cos((u + 0.008) / 1.008 * pi / 2)^2 (Nichol & Dhariwal), beta_t = 1 - f((t + 1) / N) /
    f(t / N) capped at 0.999, so abar_t = f((t + 1) / N) / f(0) where no cap acts; num_steps >= 2.
    """
    if name not in SCHEDULE_NAMES:
        raise ValueError(f"Unknown noise schedule {name!r}; expected one of {SCHEDULE_NAMES}.")
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral):
        raise ValueError(f"A diffusion schedule needs an integer num_steps, got {num_steps!r}.")
    if num_steps < 2:
        raise ValueError(f"A diffusion schedule needs num_steps >= 2, got {num_steps}.")
    betas = _linear_betas(num_steps) if name == "linear" else _cosine_betas(num_steps)
    if not np.all((betas > 0) & (betas < 1)):
        raise ValueError(
            f"The {name!r} schedule with num_steps={num_steps} gives betas outside (0, 1) "
            f"(max {betas.max():.3g}); the linear schedule needs num_steps > 20."
        )
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    fields = dict(
        betas=betas,
        alphas_cumprod=alphas_cumprod,
        alphas_cumprod_prev=alphas_cumprod_prev,
        sqrt_alphas_cumprod=np.sqrt(alphas_cumprod),
        sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - alphas_cumprod),
        sqrt_recip_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod - 1.0),
        posterior_variance=posterior_variance,
        # posterior_variance[0] is 0; its log is clipped to the next step's, as in improved-diffusion.
        posterior_log_variance_clipped=np.log(np.append(posterior_variance[1], posterior_variance[1:])),
        posterior_mean_coef1=betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        posterior_mean_coef2=(1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
    )
    return Schedule(**{key: jnp.asarray(value, dtype=jnp.float32) for key, value in fields.items()})


def _per_example(values: jax.Array, x: jax.Array) -> jax.Array:
    """values: [B], x: [B, ...] -> values shaped [B, 1, ...] to broadcast with x."""
    return values.reshape((-1,) + (1,) * (x.ndim - 1))


def _at(coefficients: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
    """coefficients: f32[N], t: i32[B], x: [B, ...] -> coefficients[t] shaped [B, 1, ...]."""
    return _per_example(coefficients[t], x)


def concrete_values(value) -> np.ndarray | None:
    """`value` as a numpy array where its values are known here (numpy, Python, or a jax.Array outside
    jit, as a notebook passes `jnp.array([...])`), else None: a traced value, or one spread over several
    processes, is left alone (the latter cannot be read by one process). For checks of indices that a
    gather would clamp or wrap without an error where unchecked: this module's timesteps, the model's
    token ids (`model.MotionTransformer`); a traced value is checked where it is concrete, or not at all."""
    if isinstance(value, jax.Array):
        try:
            return np.asarray(value) if value.is_fully_addressable else None
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
            return None  # traced (jit, vmap, grad): checked where it is concrete, or not at all
    return np.asarray(value)


def _check_timesteps(
    schedule: Schedule, t, x: jax.Array, where: str, name: str = "t", low: int = 0
) -> jax.Array:
    """`t` as i32[B], after checking it is integer timesteps, one per example of x ([B], or one for all:
    a scalar is broadcast) and, where its values are known here (numpy, Python, or a jax.Array outside
    jit: `concrete_values`), in [low, num_steps): an index outside would otherwise be clamped silently."""
    values = concrete_values(t)
    t = jnp.asarray(t)
    batch = np.shape(x)[0] if np.ndim(x) else None
    if batch is None or t.shape not in ((), (batch,)) or not jnp.issubdtype(t.dtype, jnp.integer):
        raise ValueError(
            f"{where}: {name} must be integer timesteps i32[B], one per example of the data [B, ...] "
            f"(B = {batch if batch is not None else 'none: the data has no batch axis'}; under vmap the "
            f"data's leading axis), or one integer for all; got {t.dtype}{list(t.shape)}"
        )
    t = jnp.broadcast_to(t, (batch,))
    if values is not None and values.size and (values.min() < low or values.max() >= schedule.num_steps):
        raise ValueError(
            f"{where}: {name} must lie in [{low}, {schedule.num_steps}) (the schedule's steps); got values "
            f"from {values.min()} to {values.max()}"
        )
    return t


def _check_step_pair(schedule: Schedule, t, t_prev, x: jax.Array, where: str) -> tuple[jax.Array, jax.Array]:
    """(t, t_prev) as i32[B] after `_check_timesteps` (t_prev may be -1: the clean data) and, where both
    are known here (`concrete_values`), t_prev < t for every example."""
    t_values, prev_values = concrete_values(t), concrete_values(t_prev)
    t = _check_timesteps(schedule, t, x, where)
    t_prev = _check_timesteps(schedule, t_prev, x, where, "t_prev", low=-1)
    if t_values is not None and prev_values is not None and np.any(prev_values >= t_values):
        raise ValueError(
            f"{where}: t_prev must be below t for every example; got t {t_values}, t_prev {prev_values}"
        )
    return t, t_prev


def _check_like(where: str, name: str, array: jax.Array, like: jax.Array, like_name: str) -> None:
    """`array` must have `like`'s shape: broadcast one over the other (noise [T, D] for data [B, T, D]),
    the examples would share it and the result be wrong without an error."""
    if array.shape != like.shape:
        raise ValueError(
            f"{where}: {name} must have the shape of {like_name}, {list(like.shape)}; got {list(array.shape)}"
        )


def _check_kind(kind: str) -> None:
    if kind not in PREDICTION_KINDS:
        raise ValueError(f"Unknown prediction kind {kind!r}; expected one of {PREDICTION_KINDS}.")


def _f32(x) -> jax.Array:
    return jnp.asarray(x, dtype=jnp.float32)


def _scales(schedule: Schedule, t: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sqrt(abar_t), sqrt(1 - abar_t)), each [B, 1, ...]: the signal and noise scales of x_t."""
    return _at(schedule.sqrt_alphas_cumprod, t, x), _at(schedule.sqrt_one_minus_alphas_cumprod, t, x)


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """Draw x_t ~ q(x_t | x0). x0, noise: [B, ...]; t: i32[B] -> f32[B, ...]."""
    x0, noise = _f32(x0), _f32(noise)
    _check_like("q_sample", "noise", noise, x0, "x0")
    t = _check_timesteps(schedule, t, x0, "q_sample")
    signal_scale, noise_scale = _scales(schedule, t, x0)
    return signal_scale * x0 + noise_scale * noise


def q_posterior_mean_variance(
    schedule: Schedule, x0: jax.Array, x_t: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """q(x_{t-1} | x_t, x0). x0, x_t: [B, ...]; t: i32[B].

    Returns (mean, variance, clipped log variance), each f32[B, ...] (variances repeat along the data axes).
    """
    x0, x_t = _f32(x0), _f32(x_t)
    _check_like("q_posterior_mean_variance", "x0", x0, x_t, "x_t")
    t = _check_timesteps(schedule, t, x_t, "q_posterior_mean_variance")
    mean = _at(schedule.posterior_mean_coef1, t, x_t) * x0 + _at(schedule.posterior_mean_coef2, t, x_t) * x_t
    variance = jnp.broadcast_to(_at(schedule.posterior_variance, t, x_t), x_t.shape)
    log_variance = jnp.broadcast_to(_at(schedule.posterior_log_variance_clipped, t, x_t), x_t.shape)
    return mean, variance, log_variance


def training_target(schedule: Schedule, x0, noise, t: jax.Array, kind: str) -> jax.Array:
    """What a `kind` model should output for x_t = q_sample(x0, t, noise). x0, noise: [B, ...]; t: i32[B]."""
    _check_kind(kind)
    x0, noise = _f32(x0), _f32(noise)
    _check_like("training_target", "noise", noise, x0, "x0")
    t = _check_timesteps(schedule, t, x0, "training_target")
    if kind == "epsilon":
        return noise
    if kind == "x0":
        return x0
    signal_scale, noise_scale = _scales(schedule, t, x0)
    return signal_scale * noise - noise_scale * x0


def _eps_from_x0(schedule: Schedule, x_t: jax.Array, t: jax.Array, x0: jax.Array) -> jax.Array:
    signal_scale, noise_scale = _scales(schedule, t, x_t)
    return (x_t - signal_scale * x0) / noise_scale


def predict_x0(schedule: Schedule, x_t, t: jax.Array, model_output, kind: str) -> jax.Array:
    """x0 estimate from a `kind` prediction. x_t, model_output: [B, ...] (any float); t: i32[B] -> f32."""
    _check_kind(kind)
    x_t, model_output = _f32(x_t), _f32(model_output)
    _check_like("predict_x0", "model_output", model_output, x_t, "x_t")
    t = _check_timesteps(schedule, t, x_t, "predict_x0")
    if kind == "x0":
        return model_output
    if kind == "epsilon":
        sqrt_recip = _at(schedule.sqrt_recip_alphas_cumprod, t, x_t)
        sqrt_recipm1 = _at(schedule.sqrt_recipm1_alphas_cumprod, t, x_t)
        return sqrt_recip * x_t - sqrt_recipm1 * model_output
    signal_scale, noise_scale = _scales(schedule, t, x_t)
    return signal_scale * x_t - noise_scale * model_output


def predict_eps(schedule: Schedule, x_t, t: jax.Array, model_output, kind: str) -> jax.Array:
    """Noise estimate from a `kind` prediction. x_t, model_output: [B, ...] (any float); t: i32[B] -> f32."""
    _check_kind(kind)
    x_t, model_output = _f32(x_t), _f32(model_output)
    _check_like("predict_eps", "model_output", model_output, x_t, "x_t")
    t = _check_timesteps(schedule, t, x_t, "predict_eps")
    if kind == "epsilon":
        return model_output
    if kind == "x0":
        return _eps_from_x0(schedule, x_t, t, model_output)
    signal_scale, noise_scale = _scales(schedule, t, x_t)
    return signal_scale * model_output + noise_scale * x_t


def _x0_hat(schedule, x_t, t, model_output, kind, clip_x0: float | None) -> jax.Array:
    x0_hat = predict_x0(schedule, x_t, t, model_output, kind)
    return x0_hat if clip_x0 is None else jnp.clip(x0_hat, -clip_x0, clip_x0)


def ddpm_step(
    schedule: Schedule,
    x_t: jax.Array,
    t: jax.Array,
    model_output: jax.Array,
    noise: jax.Array,
    kind: str,
    clip_x0: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """One ancestral step x_t -> x_{t-1} with the fixed-small variance (posterior variance).

    x_t, model_output, noise: [B, ...]; t: i32[B]. clip_x0: None, or c to clip the x0 estimate to [-c, c].
    Examples with t == 0 get no noise: x_{-1} is the posterior mean, which equals the x0 estimate.
    Returns (x_prev f32[B, ...], x0_hat f32[B, ...]).
    """
    x_t = _f32(x_t)
    t = _check_timesteps(schedule, t, x_t, "ddpm_step")
    x0_hat = _x0_hat(schedule, x_t, t, model_output, kind, clip_x0)
    mean, _, log_variance = q_posterior_mean_variance(schedule, x0_hat, x_t, t)
    noise_scale = jnp.where(_per_example(t, x_t) > 0, jnp.exp(0.5 * log_variance), 0.0)
    noise = _f32(noise)
    _check_like("ddpm_step", "noise", noise, x_t, "x_t")
    return mean + noise_scale * noise, x0_hat


def ddim_step(
    schedule: Schedule,
    x_t: jax.Array,
    t: jax.Array,
    t_prev: jax.Array,
    model_output: jax.Array,
    noise: jax.Array,
    kind: str,
    eta: float | jax.Array = 0.0,
    clip_x0: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """One DDIM step x_t -> x_{t_prev} (Song et al. 2021, eq. 12).

    x_t, model_output, noise: [B, ...]; t, t_prev: i32[B] with t_prev < t; t_prev < 0 marks the final step
    (abar_prev = 1, so x_prev = x0_hat). eta in [0, 1] (may be traced): 0 is deterministic DDIM, 1 matches
    the DDPM posterior variance. clip_x0: None, or c to clip the x0 estimate to [-c, c] (the noise estimate
    is then recomputed from the clipped x0). Returns (x_prev f32[B, ...], x0_hat f32[B, ...]).
    """
    x_t = _f32(x_t)
    t, t_prev = _check_step_pair(schedule, t, t_prev, x_t, "ddim_step")
    _check_eta(eta, "ddim_step")
    x0_hat = _x0_hat(schedule, x_t, t, model_output, kind, clip_x0)
    if clip_x0 is None:
        eps_hat = predict_eps(schedule, x_t, t, model_output, kind)
    else:
        eps_hat = _eps_from_x0(schedule, x_t, t, x0_hat)
    # 1 - abar from the float64-derived sqrt(1 - abar), not from float32 abar: near t = 0 abar is within
    # 1e-4 of 1, and 1 - abar in float32 would keep only ~3 significant digits.
    has_prev = _per_example(t_prev, x_t) >= 0
    prev = jnp.maximum(t_prev, 0)
    noise_var = _at(schedule.sqrt_one_minus_alphas_cumprod, t, x_t) ** 2  # 1 - abar
    noise_var_prev = jnp.where(has_prev, _at(schedule.sqrt_one_minus_alphas_cumprod, prev, x_t) ** 2, 0.0)
    abar_prev = jnp.where(has_prev, _at(schedule.alphas_cumprod, prev, x_t), 1.0)
    # sigma^2 = eta^2 (1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev). Where abar_prev is near 1 the
    # last factor is written as ((1 - abar) - (1 - abar_prev)) / abar_prev, which keeps its digits there;
    # elsewhere 1 - abar / abar_prev does (the noise variances are then both near 1).
    abar = _at(schedule.alphas_cumprod, t, x_t)
    signal_loss = jnp.where(abar_prev > 0.5, (noise_var - noise_var_prev) / abar_prev, 1.0 - abar / abar_prev)
    sigma = eta * jnp.sqrt(noise_var_prev / noise_var * signal_loss)
    # (1 - abar_prev) - sigma^2 written as (1 - abar_prev) * ((1 - eta^2) + eta^2 * abar / abar_prev *
    # (1 - abar_prev) / (1 - abar)), a sum of terms >= 0: the difference lost its digits where sigma^2
    # nears 1 - abar_prev (eta = 1 and abar << abar_prev: cosine's last step, abar 2.4e-7, to t = 85 of 100
    # kept 2 digits). At eta = 0 it is 1 - abar_prev exactly, as before.
    ratio = abar / abar_prev * noise_var_prev / noise_var
    direction_var = noise_var_prev * ((1 - eta**2) + eta**2 * ratio)
    direction_scale = jnp.sqrt(jnp.maximum(direction_var, 0.0))
    noise = _f32(noise)
    _check_like("ddim_step", "noise", noise, x_t, "x_t")
    x_prev = jnp.sqrt(abar_prev) * x0_hat + direction_scale * eps_hat + sigma * noise
    return x_prev, x0_hat


def _check_eta(eta, where: str) -> None:
    """eta must be in [0, 1] where its value is known here (`concrete_values`; a traced eta is the caller's to
    check)."""
    value = concrete_values(eta)
    if value is not None and (value.shape != () or not 0.0 <= float(value) <= 1.0):
        raise ValueError(f"{where}: eta must be a number in [0, 1] (0: deterministic DDIM); got {eta!r}")


DDIM_SPACINGS = ("leading", "trailing")


def ddim_timesteps(num_steps: int, num_sample_steps: int, spacing: str = "leading") -> np.ndarray:
    """DDIM's sub-sequence of the diffusion steps, descending, i32[num_sample_steps] of distinct values in
    [0, num_steps).

    'leading' (the DDIM paper's uniform spacing, as MDM and MotionDiffuse respace):
    floor(i * num_steps / num_sample_steps) for i < num_sample_steps, ending at 0; for a multiple, this is
    range(0, num_steps, num_steps // num_sample_steps) reversed. Its first step is num_steps -
    num_steps / num_sample_steps, so with few steps the starting noise is read as partly signal (1 step:
    t = 0, pure noise taken for data).
    'trailing' (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed", Table 2;
    diffusers' 'trailing'): round(num_steps - i * num_steps / num_sample_steps) - 1 (numpy's round, half to
    even, of numpy's arange), starting at num_steps - 1 whatever the count.
    """
    if not 1 <= num_sample_steps <= num_steps:
        raise ValueError(
            f"num_sample_steps must be in [1, {num_steps}] (the schedule length), got {num_sample_steps}."
        )
    if spacing not in DDIM_SPACINGS:
        raise ValueError(f"DDIM spacing must be one of {DDIM_SPACINGS}, got {spacing!r}")
    if spacing == "trailing":
        # As diffusers computes it (its float steps decide the ties of round); arange can give one more
        # than num_sample_steps for some counts (1000 and 61), which are not taken.
        descending = np.arange(num_steps, 0, -num_steps / num_sample_steps)[:num_sample_steps]
        return (np.round(descending) - 1).astype(np.int32)
    offsets = np.arange(num_sample_steps, dtype=np.int64) * num_steps // num_sample_steps
    return offsets[::-1].astype(np.int32)


def _step_noise(rng: jax.Array, step: jax.Array, like: jax.Array) -> jax.Array:
    return jax.random.normal(jax.random.fold_in(rng, step), like.shape, jnp.float32)


def ddpm_sample_loop(
    schedule: Schedule,
    denoise_fn: DenoiseFn | PreparedDenoiser,
    x_T: jax.Array,
    rng: jax.Array,
    kind: str,
    clip_x0: float | None = None,
) -> jax.Array:
    """Ancestral sampling from t = num_steps - 1 down to 0 in one `lax.scan` (a PreparedDenoiser: two).

    x_T: [B, ...] starting noise (the caller draws it). The i-th step (i = 0 first) uses the noise
    normal(fold_in(rng, i)). Returns the x0 sample f32[B, ...].
    """
    _check_kind(kind)
    x_T = _f32(x_T)

    def update(x_t, model_output, i, t):
        t_batch = jnp.full((x_t.shape[0],), t, jnp.int32)
        noise = _step_noise(rng, i, x_t)
        return ddpm_step(schedule, x_t, t_batch, model_output, noise, kind, clip_x0)[0]

    timesteps = np.arange(schedule.num_steps - 1, -1, -1, dtype=np.int32)
    indices = np.arange(schedule.num_steps, dtype=np.int32)
    return _run_steps(denoise_fn, update, x_T, (indices, timesteps))


def ddim_sample_loop(
    schedule: Schedule,
    denoise_fn: DenoiseFn | PreparedDenoiser,
    x_T: jax.Array,
    rng: jax.Array,
    kind: str,
    num_sample_steps: int,
    eta: float | jax.Array = 0.0,
    clip_x0: float | None = None,
    spacing: str = "leading",
) -> jax.Array:
    """DDIM sampling over ddim_timesteps(num_steps, num_sample_steps, spacing) in one `lax.scan` (two for
    a PreparedDenoiser).

    x_T: [B, ...] starting noise (the caller draws it); num_sample_steps: static int. The i-th step uses
    the noise normal(fold_in(rng, i)), scaled by a sigma that is 0 when eta == 0 (for a Python 0 it is
    not drawn at all). Returns the x0 sample f32[B, ...].
    """
    _check_kind(kind)
    _check_eta(eta, "ddim_sample_loop")
    x_T = _f32(x_T)
    timesteps = ddim_timesteps(schedule.num_steps, num_sample_steps, spacing)
    previous = np.append(timesteps[1:], -1).astype(np.int32)
    deterministic = isinstance(eta, int | float) and eta == 0  # a static zero: skip drawing unused noise

    def update(x_t, model_output, i, t, t_prev):
        batch = x_t.shape[0]
        t_batch, t_prev_batch = jnp.full((batch,), t, jnp.int32), jnp.full((batch,), t_prev, jnp.int32)
        noise = jnp.zeros_like(x_t) if deterministic else _step_noise(rng, i, x_t)
        return ddim_step(schedule, x_t, t_batch, t_prev_batch, model_output, noise, kind, eta, clip_x0)[0]

    indices = np.arange(num_sample_steps, dtype=np.int32)
    return _run_steps(denoise_fn, update, x_T, (indices, timesteps, previous))


def _log_snr_half(schedule: Schedule, t: jax.Array, x: jax.Array) -> jax.Array:
    """lambda_t = log(sqrt(abar_t) / sqrt(1 - abar_t)) (half the log signal-to-noise ratio), [B, 1, ...];
    t must be in [0, num_steps)."""
    signal_scale, noise_scale = _scales(schedule, t, x)
    return jnp.log(signal_scale) - jnp.log(noise_scale)


def dpmpp_2m_step(
    schedule: Schedule,
    x_t: jax.Array,
    t: jax.Array,
    t_prev: jax.Array,
    model_output: jax.Array,
    kind: str,
    previous_x0: jax.Array | None = None,
    t_before: jax.Array | None = None,
    clip_x0: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """One step x_t -> x_{t_prev} of DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided
    Sampling of Diffusion Probabilistic Models", Algorithm 2): the probability-flow ODE solved in
    lambda = log(alpha / sigma) (alpha = sqrt(abar), sigma = sqrt(1 - abar)) with the x0 estimate D:

      x_{t_prev} = (sigma_prev / sigma_t) x_t - alpha_prev * expm1(-h) * D,   h = lambda_prev - lambda_t,

    D = x0_hat (first order: the step is DDIM's with eta = 0) where there is no earlier estimate, else
    D = x0_hat + (x0_hat - previous_x0) / (2 r) with r = (lambda_t - lambda_before) / h: the linear
    extrapolation in lambda through the estimate at t_before, the step before t.

    x_t, model_output, previous_x0: [B, ...]; t, t_prev, t_before: i32[B]. t_prev < 0 marks the final
    step to the clean data (lambda = inf: x_prev = x0_hat, first order, as diffusers' solver ends with
    final_sigmas_type='zero'); t_before < 0 (or previous_x0 None) marks the first step. t_prev < t < t_before
    elsewhere. clip_x0: None, or c to clip the x0 estimate to [-c, c] (before it enters D).
    Returns (x_prev f32[B, ...], x0_hat f32[B, ...]): x0_hat is the next step's previous_x0.
    """
    x_t = _f32(x_t)
    t_values = concrete_values(t)
    t, t_prev = _check_step_pair(schedule, t, t_prev, x_t, "dpmpp_2m_step")
    x0_hat = _x0_hat(schedule, x_t, t, model_output, kind, clip_x0)
    if previous_x0 is None or t_before is None:
        derivative_term = jnp.zeros_like(x0_hat)
        has_before = jnp.zeros(_per_example(t, x_t).shape, bool)
        before = t
    else:
        before_values = concrete_values(t_before)
        t_before = _check_timesteps(schedule, t_before, x_t, "dpmpp_2m_step", "t_before", low=-1)
        if before_values is not None and t_values is not None:
            bad = (before_values >= 0) & (before_values <= t_values)
            if np.any(bad):
                raise ValueError(
                    "dpmpp_2m_step: t_before (the previous estimate's step) must be above t, or -1 for "
                    f"none; got t {t_values}, t_before {before_values}"
                )
        has_before = _per_example(t_before, x_t) >= 0
        before = jnp.where(t_before >= 0, t_before, t)
        previous_x0 = _f32(previous_x0)
        _check_like("dpmpp_2m_step", "previous_x0", previous_x0, x_t, "x_t")
        derivative_term = x0_hat - previous_x0
    has_prev = _per_example(t_prev, x_t) >= 0
    prev = jnp.maximum(t_prev, 0)
    lam_t = _log_snr_half(schedule, t, x_t)
    lam_prev = _log_snr_half(schedule, prev, x_t)
    lam_before = _log_snr_half(schedule, before, x_t)
    h = jnp.where(has_prev, lam_prev - lam_t, 1.0)  # 1.0: a placeholder where the step is final
    r = (lam_t - lam_before) / h
    second_order = has_prev & has_before
    safe_r = jnp.where(second_order, r, 1.0)
    d = x0_hat + jnp.where(second_order, derivative_term / (2.0 * safe_r), 0.0)
    signal_prev, noise_prev = _scales(schedule, prev, x_t)
    noise_t = _at(schedule.sqrt_one_minus_alphas_cumprod, t, x_t)
    stepped = (noise_prev / noise_t) * x_t - signal_prev * jnp.expm1(-h) * d
    return jnp.where(has_prev, stepped, x0_hat), x0_hat


def dpmpp_2m_sample_loop(
    schedule: Schedule,
    denoise_fn: DenoiseFn | PreparedDenoiser,
    x_T: jax.Array,
    kind: str,
    num_sample_steps: int,
    clip_x0: float | None = None,
    spacing: str = "leading",
) -> jax.Array:
    """DPM-Solver++(2M) over ddim_timesteps(num_steps, num_sample_steps, spacing) in one `lax.scan` (two for
    a PreparedDenoiser): deterministic (no noise is drawn), second order but for the first step (no
    earlier estimate), the step into t = 0 and the final one (to the clean data), which are first order
    (DDIM's steps with eta = 0; 2 steps are DDIM's 2 steps). The step into t = 0 is DPM-Solver's "lower
    order final" (diffusers' lower_order_final also lowers the step before the last below 15 steps; this
    does not): lambda jumps there (leading spacing, linear schedule, 10 steps: from lambda(100) = 1.07 to
    lambda(0) = 4.61, of the 8.7 the 10 steps cover) while the x0 estimate has settled, and extrapolating
    it linearly over that interval overshoots. Measured on Gaussian data (tests/test_diffusion.py), leading
    spacing, 10 steps: errors 0.064 (linear) and 0.019 (cosine) with it, 0.30 and 0.116 without, DDIM's
    0.18 and 0.115.

    x_T: [B, ...] starting noise (the caller draws it); num_sample_steps: static int.
    Returns the x0 sample f32[B, ...].
    """
    _check_kind(kind)
    x_T = _f32(x_T)
    timesteps = ddim_timesteps(schedule.num_steps, num_sample_steps, spacing)
    previous = np.append(timesteps[1:], -1).astype(np.int32)
    before = np.insert(timesteps[:-1], 0, -1).astype(np.int32)
    before[previous == 0] = -1  # the step into t = 0: first order (see the docstring)

    def update(state, model_output, i, t, t_prev, t_before):
        x_t, previous_x0 = state
        batch = x_t.shape[0]
        t_batch, t_prev_batch, t_before_batch = (
            jnp.full((batch,), value, jnp.int32) for value in (t, t_prev, t_before)
        )
        return dpmpp_2m_step(
            schedule, x_t, t_batch, t_prev_batch, model_output, kind, previous_x0, t_before_batch, clip_x0
        )

    indices = np.arange(num_sample_steps, dtype=np.int32)
    state = (x_T, jnp.zeros_like(x_T))
    per_step = (indices, timesteps, previous, before)
    return _run_steps(denoise_fn, update, state, per_step, x_of=lambda carried: carried[0])[0]
