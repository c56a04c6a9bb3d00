"""A PyTorch twin of our MotionTransformer and train step, for side-by-side timings (benchmarks only).

Written from `motion_ddpm_jax/model.py`, `losses.py`, `diffusion.py` and `train.py`: the same architecture,
sizes and parameter names (Flax `layers_0/self_attention/query/kernel` <-> torch
`layers.0.self_attention.query.weight`, kernels transposed), the same precision rules (softmaxes, layer
norms, the residual stream and the losses in float32; matmuls in the autocast dtype when one is given),
and the same step: per-example t, noise and caption dropout, q_sample, epsilon prediction, masked MSE +
velocity + acceleration (+ the optional bone-length term) on the x0 estimate with truncated-SNR weights,
global-norm clipping, AdamW under the warmup-cosine schedule, and the parameter EMA.

Two differences, both in the twin's favour and both documented where they happen: the twin always
applies the update (ours skips non-finite steps, which would cost torch a device sync per step), and
its samplers read the schedule's coefficients as Python floats. The samplers' loops are the original's
(the whole model at every step); `hoisted=True` hoists out of them what ours hoists, for a like-for-like
comparison (`bench_sampling.py`'s `torch-*-hoisted` rows).

torch is the optional `bench` extra (`pip install -e '.[bench]'`), never a dependency of the package.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_MASKED_LOGIT = -1e6


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """t int [B] -> float32 [B, dim] = [cos(t f), sin(t f)], f_i = max_period^(-i / (dim // 2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None, :]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(embedding, (0, 1)) if dim % 2 else embedding


def efficient_attention(q, k, v, key_mask, num_heads: int) -> torch.Tensor:
    """Linear attention: q [B, T, C], k and v [B, S, C], key_mask bool [B, S] -> [B, T, C] (see model.py)."""
    return efficient_read(q, efficient_context(k, v, key_mask, num_heads, q.dtype), num_heads)


def efficient_context(k, v, key_mask, num_heads: int, dtype: torch.dtype) -> torch.Tensor:
    """The linear attention's context [B, heads, H, H] of keys and values [B, S, C] over valid keys: all
    it reads of them (a cross-attention's depends on the caption alone)."""
    batch, sources, width = k.shape
    head = width // num_heads
    drop = ~key_mask[:, :, None, None]
    k = k.view(batch, sources, num_heads, head).float().masked_fill(drop, _MASKED_LOGIT)
    k = torch.softmax(k, dim=1).to(dtype)
    v = v.view(batch, sources, num_heads, head).masked_fill(drop, 0).to(dtype)
    return torch.einsum("bshd,bshe->bhde", k, v)


def efficient_read(q, context, num_heads: int) -> torch.Tensor:
    """q [B, T, C] read through `efficient_context(...)` -> [B, T, C]."""
    batch, frames, width = q.shape
    dtype = q.dtype
    q = torch.softmax(q.view(batch, frames, num_heads, width // num_heads).float(), dim=-1).to(dtype)
    out = torch.einsum("bthd,bhde->bthe", q, context)
    return out.reshape(batch, frames, width)


def softmax_attention(q, k, v, key_mask, num_heads: int) -> torch.Tensor:
    """Scaled dot-product attention over valid keys: q [B, T, C], k, v [B, S, C] -> [B, T, C]."""
    batch, frames, width = q.shape
    head = width // num_heads

    def heads(x):
        return x.view(batch, -1, num_heads, head).transpose(1, 2)

    v = v.masked_fill(~key_mask[:, :, None], 0)
    out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=key_mask[:, None, None, :])
    return out.transpose(1, 2).reshape(batch, frames, width)


def _layer_norm(width: int) -> nn.LayerNorm:
    return nn.LayerNorm(width, eps=1e-5)


class StylizationBlock(nn.Module):
    def __init__(self, latent_dim: int, emb_dim: int, dropout: float):
        super().__init__()
        self.emb = nn.Linear(emb_dim, 2 * latent_dim)
        self.norm = _layer_norm(latent_dim)
        self.out = nn.Linear(latent_dim, latent_dim)
        self.dropout = nn.Dropout(dropout)

    def modulation(self, emb) -> torch.Tensor:
        """emb [N, E] -> (scale, shift) side by side, float32 [N, 2C]: what the block reads of emb."""
        return self.emb(F.silu(emb)).float()

    def styled(self, h, modulation) -> torch.Tensor:
        scale, shift = modulation[:, None, :].chunk(2, dim=-1)
        y = F.silu(self.norm(h.float()) * (1.0 + scale) + shift)
        return self.out(self.dropout(y)).float()

    def forward(self, h, emb):
        return self.styled(h, self.modulation(emb))


class TemporalAttention(nn.Module):
    """Self-attention over frames (source_width None) or cross-attention to the text; styled; residual."""

    def __init__(self, latent_dim, emb_dim, num_heads, attention, dropout, source_width=None):
        super().__init__()
        self.num_heads, self.attention = num_heads, attention
        self.norm = _layer_norm(latent_dim)
        if source_width is not None:
            self.text_norm = _layer_norm(source_width)
        width = latent_dim if source_width is None else source_width
        self.query = nn.Linear(latent_dim, latent_dim)
        self.key = nn.Linear(width, latent_dim)
        self.value = nn.Linear(width, latent_dim)
        self.style = StylizationBlock(latent_dim, emb_dim, dropout)

    def forward(self, h, emb, mask, context=None, context_mask=None):
        source = None if context is None else self.text_source(context, context_mask)
        return self.attend(h, mask, self.style.modulation(emb), source)

    def text_source(self, context, context_mask) -> dict[str, torch.Tensor]:
        """Cross-attention: what the queries attend to, which depends on the caption alone."""
        return self._source(self.text_norm(context.float()), context_mask)

    def _source(self, source, source_mask) -> dict[str, torch.Tensor]:
        k, v = self.key(source), self.value(source)
        if self.attention == "efficient":
            return {"context": efficient_context(k, v, source_mask, self.num_heads, k.dtype)}
        return {"key": k, "value": v, "mask": source_mask}

    def attend(self, h, mask, modulation, source=None):
        """The block given its modulation (`style.modulation(emb)`) and, for a cross-attention, its
        `text_source` (None: self-attention over the frames)."""
        x = self.norm(h)
        if source is None:
            source = self._source(x, mask)
        q = self.query(x)
        if self.attention == "efficient":
            y = efficient_read(q, source["context"], self.num_heads)
        else:
            y = softmax_attention(q, source["key"], source["value"], source["mask"], self.num_heads)
        return h + self.style.styled(y, modulation)


class FeedForward(nn.Module):
    def __init__(self, latent_dim, ff_size, emb_dim, dropout):
        super().__init__()
        self.linear1 = nn.Linear(latent_dim, ff_size)
        self.linear2 = nn.Linear(ff_size, latent_dim)
        self.dropout = nn.Dropout(dropout)
        self.style = StylizationBlock(latent_dim, emb_dim, dropout)

    def forward(self, h, emb):
        return self.styled(h, self.style.modulation(emb))

    def styled(self, h, modulation):
        y = self.linear2(self.dropout(F.gelu(self.linear1(h))))
        return h + self.style.styled(y, modulation)


class DecoderLayer(nn.Module):
    def __init__(self, latent_dim, ff_size, emb_dim, num_heads, text_dim, attention, dropout):
        super().__init__()
        common = (latent_dim, emb_dim, num_heads, attention, dropout)
        self.self_attention = TemporalAttention(*common)
        self.cross_attention = TemporalAttention(*common, source_width=text_dim)
        self.ffn = FeedForward(latent_dim, ff_size, emb_dim, dropout)

    def forward(self, h, emb, mask, text, text_mask):
        h = self.self_attention(h, emb, mask)
        h = self.cross_attention(h, emb, mask, text, text_mask)
        return self.ffn(h, emb)

    def modulations(self, emb) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each block's (scale, shift) [N, 2C]: self-attention, cross-attention, feed-forward."""
        return tuple(block.style.modulation(emb) for block in self.blocks())

    def blocks(self):
        return self.self_attention, self.cross_attention, self.ffn

    def denoise(self, h, mask, text_source, modulations):
        """`forward` given the cross-attention's `text_source` and the blocks' `modulations`."""
        h = self.self_attention.attend(h, mask, modulations[0])
        h = self.cross_attention.attend(h, mask, modulations[1], text_source)
        return self.ffn.styled(h, modulations[2])


class TextEncoderLayer(nn.Module):
    """Post-norm transformer encoder layer, GELU, as model.TextEncoderLayer."""

    def __init__(self, width, num_heads, ff_size, dropout):
        super().__init__()
        self.num_heads = num_heads
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.attention_out = nn.Linear(width, width)
        self.norm1, self.norm2 = _layer_norm(width), _layer_norm(width)
        self.linear1 = nn.Linear(width, ff_size)
        self.linear2 = nn.Linear(ff_size, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, text_mask):
        q, k, v = self.query(x), self.key(x), self.value(x)
        a = self.attention_out(softmax_attention(q, k, v, text_mask, self.num_heads))
        x = self.norm1(x + self.dropout(a).float())
        f = self.dropout(self.linear2(self.dropout(F.gelu(self.linear1(x)))))
        return self.norm2(x + f.float())


class TextEncoder(nn.Module):
    def __init__(self, vocab_size, max_length, width, num_layers, num_heads, ff_size, dropout, feature_dim):
        super().__init__()
        if feature_dim is None:
            self.token_embedding = nn.Embedding(vocab_size, width)
            self.positions = nn.Embedding(max_length, width)
        else:
            self.feature_proj = nn.Linear(feature_dim, width)
        self.layers = nn.ModuleList(
            TextEncoderLayer(width, num_heads, ff_size, dropout) for _ in range(num_layers)
        )
        self.norm = _layer_norm(width)

    def forward(self, tokens, text_features, text_mask):
        if text_features is None:
            x = self.token_embedding(tokens) + self.positions.weight[: tokens.shape[1]]
        else:
            x = self.feature_proj(text_features).float()
        for layer in self.layers:
            x = layer(x, text_mask)
        return self.norm(x)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The fields of model.MotionTransformer that shape the network."""

    input_feats: int
    max_motion_length: int = 196
    latent_dim: int = 512
    num_layers: int = 8
    ff_size: int = 1024
    num_heads: int = 8
    dropout: float = 0.0
    text_vocab_size: int = 49408
    text_max_length: int = 77
    text_latent_dim: int = 256
    text_num_layers: int = 4
    text_num_heads: int = 4
    text_ff_size: int = 2048
    attention: str = "efficient"

    @classmethod
    def of(cls, flax_model) -> Sizes:
        """The sizes of one of our `model.MotionTransformer`s."""
        return cls(**{field.name: getattr(flax_model, field.name) for field in dataclasses.fields(cls)})


class MotionTransformer(nn.Module):
    """The twin of model.MotionTransformer: forward(x [B, T, D], t [B], tokens [B, L] | None, text_mask
    [B, L], mask [B, T], text_features=None, encoded_text=None) -> float32 [B, T, D]. `text_feature_dim`
    F replaces the token embeddings by a Dense F -> text_latent_dim, as in ours."""

    def __init__(self, sizes: Sizes, text_feature_dim: int | None = None):
        super().__init__()
        s = self.sizes = sizes
        emb_dim = 4 * s.latent_dim
        self.time_embed_1 = nn.Linear(s.latent_dim, emb_dim)
        self.time_embed_2 = nn.Linear(emb_dim, emb_dim)
        self.text_encoder = TextEncoder(
            s.text_vocab_size, s.text_max_length, s.text_latent_dim, s.text_num_layers, s.text_num_heads,
            s.text_ff_size, s.dropout, text_feature_dim,
        )  # fmt: skip
        self.text_proj = nn.Linear(s.text_latent_dim, emb_dim)
        self.motion_positions = nn.Embedding(s.max_motion_length, s.latent_dim)
        self.joint_embed = nn.Linear(s.input_feats, s.latent_dim)
        self.layers = nn.ModuleList(
            DecoderLayer(
                s.latent_dim, s.ff_size, emb_dim, s.num_heads, s.text_latent_dim, s.attention, s.dropout
            )
            for _ in range(s.num_layers)
        )
        self.out = nn.Linear(s.latent_dim, s.input_feats)

    def encode_text(self, tokens, text_mask, text_features=None) -> torch.Tensor:
        return self.text_encoder(tokens, text_features, text_mask)

    def forward(self, x, t, tokens, text_mask, mask, text_features=None, encoded_text=None):
        text = self.encode_text(tokens, text_mask, text_features) if encoded_text is None else encoded_text
        emb = self._step_embedding(t) + self._text_embedding(text, text_mask)
        h = self.joint_embed(x).float() + self.motion_positions.weight[: x.shape[1]]
        for layer in self.layers:
            h = layer(h, emb, mask, text, text_mask)
        return self.out(h).float()

    def _step_embedding(self, t):
        emb = timestep_embedding(t, self.sizes.latent_dim)
        return self.time_embed_2(F.silu(self.time_embed_1(emb))).float()

    def _text_embedding(self, text, text_mask):
        last_token = (text_mask.sum(dim=1) - 1).clamp(min=0)
        pooled = text[torch.arange(text.shape[0], device=text.device), last_token]
        return self.text_proj(pooled).float()

    # What a sampler can compute outside its loop over the steps, as ours does (model.MotionTransformer's
    # condition_on_text / modulations / denoise): forward(x, t, ...) equals
    # denoise(x, mask, c, modulations(t, c["emb"])) with c = condition_on_text(text, text_mask).

    def condition_on_text(self, text, text_mask) -> dict[str, Any]:
        """Encoded captions [B, L, W] -> {"emb": their pooled embedding f32 [B, E], "layers": per layer
        what its cross-attention attends to}."""
        return {
            "emb": self._text_embedding(text, text_mask),
            "layers": [layer.cross_attention.text_source(text, text_mask) for layer in self.layers],
        }

    def modulations(self, t, text_emb) -> list[tuple[torch.Tensor, ...]]:
        """Steps t [N] and caption embeddings [N, E] (rows independent) -> per layer each block's
        (scale, shift) [N, 2C]."""
        emb = self._step_embedding(t) + text_emb
        return [layer.modulations(emb) for layer in self.layers]

    def denoise(self, x, mask, condition, modulations) -> torch.Tensor:
        h = self.joint_embed(x).float() + self.motion_positions.weight[: x.shape[1]]
        for layer, source, mods in zip(self.layers, condition["layers"], modulations, strict=True):
            h = layer.denoise(h, mask, source, mods)
        return self.out(h).float()


def twin_of(flax_model, text_feature_dim: int | None = None, device: str | torch.device = "cpu"):
    """A twin of our `flax_model` (torch's default init; load ours with `load_flax_params`)."""
    with torch.device(device):
        return MotionTransformer(Sizes.of(flax_model), text_feature_dim)


def torch_name(flax_path: tuple[str, ...]) -> str:
    """('layers_0', 'ffn', 'linear1', 'kernel') -> 'layers.0.ffn.linear1.weight'."""
    parts = []
    for part in flax_path[:-1]:
        match = re.fullmatch(r"layers_(\d+)", part)
        parts.extend(["layers", match.group(1)] if match else [part])
    leaf = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}[flax_path[-1]]
    return ".".join([*parts, leaf])


def _flatten(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def load_flax_params(twin: nn.Module, params) -> None:
    """Copy our Flax parameter tree into `twin` (kernels [in, out] -> weights [out, in]); every parameter
    of both sides must be matched, with equal shapes."""
    state = {}
    for path, value in _flatten(params):
        array = np.asarray(value, np.float32)
        if path[-1] == "kernel":
            array = array.T
        state[torch_name(path)] = torch.from_numpy(np.array(array, copy=True))
    own = twin.state_dict()
    wrong = [
        f"{name}: ours {tuple(value.shape)}, twin {tuple(own[name].shape)}"
        for name, value in state.items()
        if name in own and value.shape != own[name].shape
    ]
    if wrong:
        raise ValueError(f"parameter shapes differ between ours and the twin: {wrong[:5]}")
    twin.load_state_dict(state, strict=True)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- diffusion and losses


class Schedule:
    """Our diffusion.Schedule as torch tensors on `device` (and as Python floats for the samplers)."""

    def __init__(self, schedule, device):
        self.num_steps = int(schedule.num_steps)
        self.host = {
            name: np.array(getattr(schedule, name), np.float32)  # a writable copy for torch.from_numpy
            for name in schedule.__dataclass_fields__  # flax.struct dataclass
        }
        self.tensors = {name: torch.from_numpy(v).to(device) for name, v in self.host.items()}

    def at(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """coefficients[t] shaped [B, 1, ...] like `like`."""
        return self.tensors[name][t].reshape((-1,) + (1,) * (like.ndim - 1))


@dataclasses.dataclass
class Geometry:
    """The bone-length term's data: mean, std [J*3] (tensors), the bones' children and parents [Bones]."""

    mean: torch.Tensor
    std: torch.Tensor
    children: torch.Tensor
    parents: torch.Tensor
    root: torch.Tensor  # [1], on the device: a host index built every step would wait for a GPU

    @classmethod
    def of(cls, geometry, device) -> Geometry:
        """From our losses.Geometry (`positions` representation only)."""
        if geometry.representation != "positions":
            raise ValueError("the twin's geometric term covers the positions representation only")
        skeleton = geometry.skeleton
        parents = np.asarray(skeleton.parents)
        children = np.nonzero(parents >= 0)[0]
        return cls(
            mean=torch.as_tensor(np.array(geometry.mean, np.float32), device=device),  # writable copies
            std=torch.as_tensor(np.array(geometry.std, np.float32), device=device),
            children=torch.as_tensor(children, device=device),
            parents=torch.as_tensor(parents[children], device=device),
            root=torch.as_tensor([int(skeleton.root)], device=device),
        )


def _masked_frame_mean(per_frame, mask, weights):
    if weights is not None:
        per_frame = per_frame * weights[:, None]
    total = torch.where(mask, per_frame, torch.zeros_like(per_frame)).sum()
    return total / mask.sum().float().clamp(min=1.0)


def _difference_loss(pred, target, mask, weights, order):
    if pred.shape[1] <= order:
        return pred.new_zeros(())
    error = torch.diff(pred - target, n=order, dim=1)
    length = mask.shape[1] - order
    valid = mask[:, :length]
    for k in range(1, order + 1):
        valid = valid & mask[:, k : k + length]
    return _masked_frame_mean(error.square().mean(dim=-1), valid, weights)


def _safe_norm(x):
    squared = x.square().sum(dim=-1)
    is_zero = squared == 0
    return torch.where(is_zero, 0.0, torch.sqrt(torch.where(is_zero, 1.0, squared)))


def bone_length_loss(pred, target, mask, geometry: Geometry, weights):
    lengths = []
    for x in (pred, target):
        positions = (x * geometry.std + geometry.mean).unflatten(-1, (-1, 3))
        positions = positions.index_fill(-2, geometry.root, 0.0)
        lengths.append(_safe_norm(positions[..., geometry.children, :] - positions[..., geometry.parents, :]))
    return _masked_frame_mean((lengths[0] - lengths[1]).square().mean(dim=-1), mask, weights)


def compute_losses(schedule: Schedule, output, x_t, x0, noise, t, mask, loss_config, geometry=None):
    """losses.compute_losses for epsilon prediction with `aux_weighting` auto (truncated SNR)."""
    output = output.float()
    terms = {"loss_mot_rec": _masked_frame_mean((output - noise).square().mean(dim=-1), mask, None)}
    total = terms["loss_mot_rec"]
    enabled = [
        (name, float(loss_config[weight]))
        for name, switch, weight in (
            ("loss_vel", "use_velocity_loss", "velocity_weight"),
            ("loss_acc", "use_acceleration_loss", "acceleration_weight"),
            ("loss_geom", "use_geometric_loss", "geometric_weight"),
        )
        if loss_config[switch]
    ]
    if not enabled:
        return {"loss": total, **terms}
    if loss_config.get("aux_weighting", "auto") not in ("auto", "truncated_snr"):
        raise ValueError("the twin implements aux_weighting auto/truncated_snr only")
    x0_pred = (
        schedule.at("sqrt_recip_alphas_cumprod", t, x_t) * x_t
        - schedule.at("sqrt_recipm1_alphas_cumprod", t, x_t) * output
    )
    abar = schedule.tensors["alphas_cumprod"][t]
    weights = torch.clamp(abar / (1.0 - abar), max=1.0)
    compute = {
        "loss_vel": lambda: _difference_loss(x0_pred, x0, mask, weights, 1),
        "loss_acc": lambda: _difference_loss(x0_pred, x0, mask, weights, 2),
        "loss_geom": lambda: bone_length_loss(x0_pred, x0, mask, geometry, weights),
    }
    for name, weight in enabled:
        terms[name] = compute[name]()
        total = total + weight * terms[name]
    return {"loss": total, **terms}


def q_sample(schedule: Schedule, x0, t, noise):
    return (
        schedule.at("sqrt_alphas_cumprod", t, x0) * x0
        + schedule.at("sqrt_one_minus_alphas_cumprod", t, x0) * noise
    )


# ---------------------------------------------------------------- the train step


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def warmup_cosine(step: int, optim_config, total_steps: int, warmup: int) -> float:
    """optax.warmup_cosine_decay_schedule as train.learning_rate_schedule builds it (Python floats)."""
    lr, start = optim_config.lr, optim_config.warmup_start_factor * optim_config.lr
    warmup = min(warmup, total_steps)
    if step < warmup:
        return start + (lr - start) * step / warmup
    progress = min(max(step - warmup, 0) / max(total_steps - warmup, 1), 1.0)
    return optim_config.min_lr + (lr - optim_config.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    """The twin of train.make_train_step + apply_gradients, on one device.

    `step(batch)` with batch tensors on `device`: motion f32 [B, T, D], mask bool [B, T], tokens int
    [B, L], text_mask bool [B, L]. `config`: our ConfigDict (model.cond_drop_prob, loss, optim).
    """

    def __init__(
        self,
        model: MotionTransformer,
        config,
        schedule,
        empty_text: tuple[np.ndarray, np.ndarray],
        *,
        geometry=None,
        total_steps: int = 10_000,
        warmup: int = 500,
        seed: int = 0,
    ):
        self.model = model
        self.device = next(model.parameters()).device
        self.loss_config = config.loss.to_dict() if hasattr(config.loss, "to_dict") else dict(config.loss)
        self.schedule = Schedule(schedule, self.device)
        self.geometry = None if geometry is None else Geometry.of(geometry, self.device)
        self.empty_tokens, self.empty_mask = (torch.as_tensor(a, device=self.device) for a in empty_text)
        self.drop_prob = float(config.model.cond_drop_prob)
        optim = config.optim
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": optim.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        settings = dict(lr=optim.lr, betas=(optim.b1, optim.b2), eps=optim.eps)
        try:  # the fused kernel, as a researcher would ask for: on a CPU the default is a per-tensor loop
            self.optimizer = torch.optim.AdamW(groups, **settings, fused=True)
        except (RuntimeError, ValueError):  # a device or torch without it
            self.optimizer = torch.optim.AdamW(groups, **settings, foreach=True)
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: warmup_cosine(step, optim, total_steps, warmup) / optim.lr
        )
        self.params = params
        self.ema = [p.detach().clone() for p in params]
        self.ema_decay = float(optim.ema_decay)
        self.clip_norm = float(optim.clip_norm)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self._compiled_loss = None
        self.compile_mode = "default"  # torch.compile's mode for step(compiled=True)

    def loss(self, x0, mask, tokens, text_mask, t, noise, autocast=None, geometric: bool | None = None):
        """(loss, terms) of the twin's objective for given draws t [B] and noise [B, T, D].

        autocast: None or torch.bfloat16; geometric: overrides loss.use_geometric_loss when not None.
        """
        x_t = q_sample(self.schedule, x0, t, noise)
        with _autocast(self.device, autocast):
            output = self.model(x_t, t, tokens, text_mask, mask)
        config = self.loss_config
        if geometric is not None:
            config = {**config, "use_geometric_loss": geometric}
        terms = compute_losses(self.schedule, output, x_t, x0, noise, t, mask, config, self.geometry)
        return terms["loss"], terms

    def step(self, batch, autocast=None, *, compiled: bool = False, geometric: bool | None = None):
        """One training step; returns the loss terms and the gradient norm (tensors, not synced).

        compiled: run the model + loss under torch.compile (compiled on first use and again for each new
        autocast/geometric combination; the backward follows through AOTAutograd).
        """
        x0, mask = batch["motion"], batch["mask"]
        size = x0.shape[0]
        g = self.generator
        t = torch.randint(0, self.schedule.num_steps, (size,), device=self.device, generator=g)
        noise = torch.randn(x0.shape, device=self.device, generator=g)
        drop = torch.rand(size, device=self.device, generator=g) < self.drop_prob
        tokens = torch.where(drop[:, None], self.empty_tokens[None], batch["tokens"])
        text_mask = torch.where(drop[:, None], self.empty_mask[None], batch["text_mask"])
        if compiled and self._compiled_loss is None:
            self._compiled_loss = torch.compile(self.loss, mode=self.compile_mode)
        loss_fn = self._compiled_loss if compiled else self.loss
        loss, terms = loss_fn(x0, mask, tokens, text_mask, t, noise, autocast, geometric)
        loss.backward()
        grad_norm = self.apply_gradients()
        return {**{k: v.detach() for k, v in terms.items()}, "grad_norm": grad_norm}

    def apply_gradients(self):
        """The update from the parameters' .grad (ours: train.apply_gradients): clip to the global norm,
        AdamW, advance the schedule, clear the gradients, feed the EMA. Returns the norm before clipping."""
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm, foreach=True)
        # Ours skips a step with non-finite gradients; checking here would sync the device every step.
        self.optimizer.step()
        self.lr_schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, self.params, 1.0 - self.ema_decay)
        return grad_norm


# ---------------------------------------------------------------- samplers (Python loops, as the original's)

MODULATION_CHUNK = 50  # as sampling.MODULATION_CHUNK


def _denoiser(model, text, text_mask, mask, timesteps, hoisted: bool, chunk: int = MODULATION_CHUNK):
    """denoise(x, i) -> epsilon at step timesteps[i], called in the order of `timesteps`.

    hoisted False: the whole model at every step (the captions encoded once), as the original's loop.
    hoisted True: what ours' sampler hoists (`sampling.conditioned_denoiser`), hoisted here too: the
    pooled caption embedding and every cross-attention's context once, the step embeddings and every
    block's (scale, shift) for `chunk` steps at once, and `denoise` per step. Same function.
    """
    rows, device = text.shape[0], text.device
    if not hoisted:

        def whole_model(x, i):
            t = torch.full((rows,), int(timesteps[i]), device=device, dtype=torch.long)
            return model(x, t, None, text_mask, mask, encoded_text=text)

        return whole_model
    condition = model.condition_on_text(text, text_mask)
    steps = torch.as_tensor(np.asarray(timesteps, np.int64), device=device)
    held = {}

    def hoisted_model(x, i):
        first = i - i % chunk
        if held.get("first") != first:  # the next chunk's modulations: [chunk * rows, 2C] per block
            t = steps[first : first + chunk].repeat_interleave(rows)
            emb = condition["emb"].repeat(t.shape[0] // rows, 1)  # row r of step k at k * rows + r
            held.update(first=first, modulations=model.modulations(t, emb))
        at = slice((i - first) * rows, (i - first + 1) * rows)
        modulations = [[m[at] for m in layer] for layer in held["modulations"]]
        return model.denoise(x, mask, condition, modulations)

    return hoisted_model


def linear_weights_in(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of `model` whose Linear layers hold their weights and biases in `dtype`, cast once: under
    autocast to that dtype it computes bit for bit what `model` does (autocast casts a float32 weight at
    every call, in inference mode without a cache), for a sampler that should not pay that per step."""
    cast = copy.deepcopy(model)
    for module in cast.modules():
        if isinstance(module, nn.Linear):
            module.to(dtype)
    return cast


@torch.inference_mode()
def ddpm_sample(
    model,
    schedule: Schedule,
    x_T,
    tokens,
    text_mask,
    mask,
    generator,
    autocast=None,
    max_steps=None,
    hoisted: bool = False,
):
    """Ancestral sampling, all schedule steps (the first `max_steps` only, for a warm-up), epsilon
    prediction, fixed-small variance; the captions encoded once (hoisted: see `_denoiser`)."""
    c = schedule.host
    device = x_T.device
    timesteps = list(range(schedule.num_steps - 1, -1, -1))[:max_steps]
    with _autocast(device, autocast):
        text = model.encode_text(tokens, text_mask)
        denoise = _denoiser(model, text, text_mask, mask, timesteps, hoisted)
    x = x_T.float()
    for i, t in enumerate(timesteps):
        with _autocast(device, autocast):
            eps = denoise(x, i).float()
        x0_hat = (
            float(c["sqrt_recip_alphas_cumprod"][t]) * x - float(c["sqrt_recipm1_alphas_cumprod"][t]) * eps
        )
        mean = float(c["posterior_mean_coef1"][t]) * x0_hat + float(c["posterior_mean_coef2"][t]) * x
        if t > 0:
            scale = math.exp(0.5 * float(c["posterior_log_variance_clipped"][t]))
            x = mean + scale * torch.randn(x.shape, device=device, generator=generator)
        else:
            x = mean
    return x


@torch.inference_mode()
def ddim_sample(
    model, schedule: Schedule, x_T, tokens, text_mask, mask, timesteps, autocast=None, hoisted: bool = False
):
    """Deterministic DDIM (eta = 0) over `timesteps` (descending, ending at 0); text encoded once
    (hoisted: see `_denoiser`)."""
    abar = schedule.host["alphas_cumprod"]
    device = x_T.device
    timesteps = [int(t) for t in timesteps]
    with _autocast(device, autocast):
        text = model.encode_text(tokens, text_mask)
        denoise = _denoiser(model, text, text_mask, mask, timesteps, hoisted)
    x = x_T.float()
    for i, (t, t_prev) in enumerate(zip(timesteps, [*timesteps[1:], -1], strict=True)):
        with _autocast(device, autocast):
            eps = denoise(x, i).float()
        a, a_prev = float(abar[t]), (float(abar[t_prev]) if t_prev >= 0 else 1.0)
        x0_hat = math.sqrt(1.0 / a) * x - math.sqrt(1.0 / a - 1.0) * eps
        x = math.sqrt(a_prev) * x0_hat + math.sqrt(1.0 - a_prev) * eps
    return x


def to_torch(batch: Mapping[str, Any], device) -> dict[str, torch.Tensor]:
    """A numpy batch (motion, mask, tokens, text_mask, ...) as tensors on `device` (int32 -> int64)."""
    out = {}
    for key, value in batch.items():
        array = np.asarray(value)
        tensor = torch.from_numpy(np.array(array, order="C"))  # a writable copy (jax's arrays are read-only)
        if tensor.dtype == torch.int32:
            tensor = tensor.long()
        out[key] = tensor.to(device)
    return out
