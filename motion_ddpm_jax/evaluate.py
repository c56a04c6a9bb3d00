"""`launch.py --mode eval`: metrics of generated motion against real motion, as one report.

It holds what an eval run does with clips: choosing the real clips (`chosen_indices`, `clips_fingerprint`),
decoding positions (`decode_positions`), the real column's reference (`matched_reference`), the comparison
of real and generated clips (`prepare_comparison` / `Comparison.score`, `compare`), the table, repeat
statistics and the report. The metrics themselves are in `metrics` (pure numpy), the FGD autoencoder in
`fgd`, the checks of which data a checkpoint may be evaluated on in `lineage`.

`run(config, workdir)` restores a checkpoint, refuses data whose training-split statistics are not the
checkpoint's (its eval split could hold clips it trained on), generates one sample per real clip of
`config.eval.split` (its caption, its length) and writes the table of metrics (real | generated) as JSON,
with what identifies the evaluation: the clips, the sampler settings used, the FGD autoencoder, versions,
the unit of the positions; the real column of the Fréchet distances compares training clips of the real
clips' classes and lengths (never the real clips themselves) with them. Positions are those of the data's
skeleton (positions, rotations) or, for the HumanML3D layout, the joints `humanml3d.recover_from_ric`
decodes (real and generated alike): HumanML3D's 22 for its 263 features, KIT-ML's 21 for its 251; the
humanml3d representation of another size gets no position metrics. With eval.repeats > 1 it samples
the generated clips that many times (seeds sample.seed + k) against one real column (`prepare_comparison`
once, `Comparison.score` per repeat) and reports each generated metric's mean, std and 95% confidence
half-width (`repeat_statistics`).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import functools
import hashlib
import json
import math
import os
import shlex
import time
import warnings
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from motion_ddpm_jax import __version__, files, humanml3d, provenance
from motion_ddpm_jax import representation as layouts
from motion_ddpm_jax.errors import EvaluationError
from motion_ddpm_jax.fgd import FgdEncoder, autoencoder_dir, autoencoder_record, fgd_encoder, motion_windows
from motion_ddpm_jax.lineage import (
    check_same_statistics,
    init_chain,
    init_from_notes,
    related_clips,
    rotations_posed_on_the_data,
    split_seed,
    with_checkpoint_data,
)
from motion_ddpm_jax.metrics import (
    MAX_CLASSES,
    JointTree,
    LinearClassifier,
    bone_length_error,
    diversity,
    effector_speed,
    effectors_note,
    end_effectors,
    fit_classifier,
    frame_bone_lengths,
    frechet_distance_of,
    jitter,
    joint_tree,
    label_function,
    motion_features,
    position_unit,
    summary_features,
    units_text,
    valid_mask,
)
from motion_ddpm_jax.sampling import is_number
from motion_ddpm_jax.skeleton import Skeleton

FEATURE_CHUNK = 64  # clips decoded and summarised at a time (bounds memory on large splits)


# ------------------------------------------------------------------------------------------ --mode eval
@dataclasses.dataclass(frozen=True)
class Clips:
    """Clips of one side of the comparison.

    motion: [N, T, D] physical features, zero past each length; lengths: [N]; captions: N;
    positions: [N, T, J, 3] global joint positions (the joints of `joint_tree`), or None where the data
    decode to none (`decode_positions`).
    """

    motion: np.ndarray
    lengths: np.ndarray
    captions: tuple[str, ...]
    positions: np.ndarray | None

    def clip_motions(self) -> list[np.ndarray]:
        return [m[:n] for m, n in zip(self.motion, self.lengths, strict=True)]


def _pad(motions: Sequence[np.ndarray], rows: int = 0, multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Clips [T_i, D] -> zero-padded [max(N, rows), T, D] with T the longest rounded up to `multiple`,
    and lengths [N]."""
    lengths = np.array([len(m) for m in motions], np.int64)
    frames = -(-int(lengths.max(initial=1)) // multiple) * multiple
    out = np.zeros((max(len(motions), rows), frames, motions[0].shape[-1]), np.float32)
    for i, m in enumerate(motions):
        out[i, : len(m)] = m
    return out, lengths


@functools.partial(jax.jit, static_argnames=("skeleton", "representation"))
def _decode(motion, skeleton: Skeleton | None, representation: str):
    if representation == "humanml3d":
        return humanml3d.recover_from_ric(motion)
    return layouts.decode(motion, skeleton, representation)


def decode_positions(motion, skeleton: Skeleton | None, representation: str) -> np.ndarray | None:
    """Global joint positions [N, T, J, 3] of physical features [N, T, D] (the joints of `joint_tree`:
    the skeleton's, or for the HumanML3D layout HumanML3D's 22 or KIT-ML's 21, decoded by
    `humanml3d.recover_from_ric` as sampling decodes generated motion), or None where `joint_tree` is
    None."""
    if joint_tree(skeleton, representation, np.shape(motion)[-1]) is None:
        return None
    if representation == "humanml3d":
        skeleton = None  # (the layout decodes without one: one compiled program whatever it is)
    return np.asarray(_decode(jnp.asarray(motion, jnp.float32), skeleton, representation))


def chosen_indices(split, num_clips: int) -> np.ndarray:
    """Indices of `num_clips` clips of `split` (0 or more than it has: all), evenly spaced through it."""
    count = len(split)
    if count == 0:
        raise EvaluationError(f"the {split.name} split has no clips; set eval.split to a split with clips")
    if num_clips < 0:
        raise EvaluationError(f"eval.num_clips must be >= 0 (0 = the whole split), got {num_clips}")
    take = count if num_clips == 0 or num_clips >= count else num_clips
    return np.unique(np.linspace(0, count - 1, take).round().astype(np.int64))


def clips_fingerprint(ids: Sequence[str], lengths: Sequence[int]) -> dict[str, Any]:
    """What identifies the evaluated clips in the report: their ids and evaluated lengths (frames, after
    the cut at the model's max_motion_length) in order, and the sha256 of the JSON list of [id, length]
    pairs (compact separators), equal between two reports exactly when both lists are."""
    pairs = [[str(i), int(n)] for i, n in zip(ids, lengths, strict=True)]
    digest = hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()
    return {"sha256": digest, "ids": [p[0] for p in pairs], "lengths": [p[1] for p in pairs]}


def matched_reference(
    real_lengths: Sequence[int],
    real_classes: Sequence[str | None],
    train_lengths: Sequence[int],
    train_classes: Sequence[str | None],
) -> np.ndarray:
    """Indices of training clips that stand in for the real clips in the real column of the Fréchet
    distances: for each real clip in turn, an unused training clip of its class (where it has one and
    such a clip is left) nearest to its length, the lowest index on ties. The generated clips copy the
    real clips' captions and lengths, so a reference drawn without regard to them (as this once was:
    evenly through the training split) compared another mix of classes and lengths and overstated the
    floor. Once every training clip is used, they are used again."""
    train_lengths = np.asarray(train_lengths, np.int64)
    codes: dict[str, int] = {}
    train_codes = np.array([-1 if c is None else codes.setdefault(c, len(codes)) for c in train_classes])
    unused = np.ones(len(train_lengths), bool)
    chosen = []
    for length, label in zip(real_lengths, real_classes, strict=True):
        if not unused.any():
            unused[:] = True
        same = unused & (train_codes == codes.get(label, -2))  # no class (None) or an unseen one: none
        pool = same if same.any() else unused
        distance = np.where(pool, np.abs(train_lengths - int(length)), np.iinfo(np.int64).max)
        index = int(np.argmin(distance))
        unused[index] = False
        chosen.append(index)
    return np.asarray(chosen, np.int64)


def _metrics_of(clips: Clips, tree: JointTree, fps: float, effectors, bone_reference) -> dict[str, Any]:
    """The position metrics of `clips` (none where they have no positions); bone_reference: [B] lengths."""
    out: dict[str, Any] = {}
    if clips.positions is None:
        return out
    p, n = clips.positions, clips.lengths
    for name, value in jitter(p, n, fps).items():
        out[f"jitter/{name}"] = value
    bones = bone_length_error(p, n, tree, bone_reference)
    out["bone_error/mean"], out["bone_error/worst"] = bones["mean"], bones["worst"]
    out["bone_error/worst_bone"] = bones["worst_bone"]
    for group, joints in effectors.items():
        speed = effector_speed(p, n, fps, joints)
        out[f"speed/{group}_mean"], out[f"speed/{group}_p95"] = speed["mean"], speed["p95"]
    out["diversity"] = diversity(p, n, root=tree.root)
    return out


def _features(
    motions: Sequence[np.ndarray], skeleton, representation: str, fps: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """`motion_features` (or, where `joint_tree` is None, `summary_features` of the raw features) of clips
    [T_i, D], decoded a chunk at a time, and the mean length of every bone [B] over all their frames
    (as `mean_bone_lengths`; None without a joint tree)."""
    tree = joint_tree(skeleton, representation, motions[0].shape[-1])
    parts, bone_sums, frames = [], 0.0, 0
    for i in range(0, len(motions), FEATURE_CHUNK):
        chunk = motions[i : i + FEATURE_CHUNK]
        motion, lengths = _pad(chunk, rows=FEATURE_CHUNK, multiple=32)  # few shapes: few compilations
        positions = decode_positions(motion, skeleton, representation)
        if positions is None:
            parts.append(summary_features(motion[: len(chunk)], lengths, fps))
            continue
        positions = positions[: len(chunk)]
        parts.append(motion_features(positions, lengths, fps, tree.root))
        valid = valid_mask(lengths, positions.shape[1], 0)
        bone_sums = bone_sums + frame_bone_lengths(positions, tree)[valid].sum(axis=0)
        frames += int(valid.sum())
    bones = None if tree is None or frames == 0 else np.asarray(bone_sums) / frames
    return np.concatenate(parts), bones


MORE_CLIPS = "evaluate 2 or more clips (eval.num_clips; 0 = the whole split)"


def _fit_notes(metric: str, dims: int, counts: dict[str, int], what: str) -> list[str]:
    """A note where a Fréchet distance fits a Gaussian to no more samples than its dimensions (n <= d:
    the covariance has rank at most n - 1 < d), naming the metric, the dimension and the counts; and one
    where a side has a single sample, which makes it NaN (none: the caller says why)."""
    notes = []
    single = [side for side, n in counts.items() if n == 1]
    if single:
        # real and generated: both columns compare the real clips' Gaussian; the reference: the real column
        columns = (
            {"real", "generated"}
            if "real" in single
            else {
                column
                for side, column in (("reference", "real"), ("generated", "generated"))
                if side in single
            }
        )
        which = "" if len(columns) == 2 else f"the {next(iter(columns))} column of "
        notes.append(
            f"{which}{metric} is NaN: a Gaussian needs 2 or more {what} a side, and {', '.join(single)} "
            f"{'has' if len(single) == 1 else 'have'} 1; {MORE_CLIPS}"
        )
    few = {side: n for side, n in counts.items() if 2 <= n <= dims}
    if not few:
        return notes
    shown = ", ".join(f"{n} {side}" for side, n in few.items())
    return notes + [
        f"{metric}: Gaussians in {dims} dimensions fitted to {shown} {what}, no more samples than "
        "dimensions (each covariance has rank at most n - 1 < d): the value depends strongly on the "
        "sample count; compare it only between evaluations of the same number of clips"
    ]


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What `compare` computes once of the real clips, to score generated clips of their captions and
    lengths (`score`) as often as they are sampled: eval.repeats scores several generated sets against
    one real column, which does not depend on the sampling seed.

    real_column: {metric: value} of the real clips; real_features: [N, F] (`_features`); tree and
    effectors: the joints of the position metrics (None without positions); bone_reference: [B];
    classifier / to_class: the conditioning classifier and caption -> class (None where skipped);
    real_latents: [W, latent] FGD latents of the real clips' windows (None without an autoencoder);
    head_notes / class_notes: the notes that precede the generated side's Fréchet note / FGD notes.
    """

    real: Clips
    real_column: dict[str, Any]
    skeleton: Skeleton | None
    representation: str
    fps: float
    tree: JointTree | None
    effectors: dict[str, np.ndarray] | None
    bone_reference: np.ndarray | None
    real_features: np.ndarray
    reference_count: int
    classifier: LinearClassifier | None
    to_class: Callable[[str], str | None]
    encoder: FgdEncoder | None
    real_latents: np.ndarray | None
    reference_windows: int
    head_notes: tuple[str, ...]
    class_notes: tuple[str, ...]

    def score(self, generated: Clips) -> tuple[dict[str, Any], list[str]]:
        """The generated column ({metric: value}, in the real column's order) of `generated` (the real
        clips' captions and lengths), and every note of the comparison in `compare`'s order."""
        column: dict[str, Any] = {}
        if self.tree is not None:
            column.update(_metrics_of(generated, self.tree, self.fps, self.effectors, self.bone_reference))
        features = _features(generated.clip_motions(), self.skeleton, self.representation, self.fps)[0]
        column["frechet/features"] = frechet_distance_of(self.real_features, features)
        notes = list(self.head_notes)
        notes += _fit_notes(
            "frechet/features",
            self.real_features.shape[1],
            {"real": len(self.real_features), "generated": len(features), "reference": self.reference_count},
            "clips",
        )
        if self.classifier is not None:
            classes = [self.to_class(c) for c in generated.captions]
            known = [i for i, label in enumerate(classes) if label in self.classifier.classes]
            column["conditioning_accuracy"] = self.classifier.accuracy(
                features[known], [classes[i] for i in known]
            )
        notes += self.class_notes
        if self.encoder is None:
            column["fgd"] = None
            return column, notes
        windows = motion_windows(generated.clip_motions(), self.encoder.window)
        column["fgd"] = frechet_distance_of(self.real_latents, self.encoder.encode(windows))
        notes.append(f"FGD on {len(self.real_latents)} real / {len(windows)} generated windows")
        notes += _fit_notes(
            "fgd",
            int(self.encoder.model.latent),
            {"real": len(self.real_latents), "generated": len(windows), "reference": self.reference_windows},
            "windows",
        )
        if not len(self.real_latents) or not len(windows):
            longest = max((len(m) for m in self.real.clip_motions()), default=0)
            notes.append(
                f"FGD is NaN: its autoencoder reads windows of {self.encoder.window} frames, and the "
                f"compared clips are shorter (the longest real clip here: {longest} frames; clips are capped "
                "at the model's data.max_motion_length)"
            )
        return column, notes

    def table(self, generated_column: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """{metric: {"real": v, "generated": v}} of the real column and a generated one (a metric missing
        from a side is None there)."""
        names = list(dict.fromkeys([*self.real_column, *generated_column]))
        return {
            name: {"real": self.real_column.get(name), "generated": generated_column.get(name)}
            for name in names
        }

    def below_real_notes(self, table: dict[str, dict[str, Any]]) -> list[str]:
        """A note for each Fréchet distance whose generated value is below the real column's: real motion
        of the clips' kind (the matched training clips) scores the real column, which a generator of motion
        as real as the data's matches on average; below it, at these counts the two differ by the
        estimate's noise, or the samples vary less than real motion (a half-trained model had ranked
        better than the data by FGD on 11 clips)."""
        counts = {"frechet/features": (len(self.real_features), "clips")}
        if self.real_latents is not None:
            counts["fgd"] = (len(self.real_latents), "real windows")
        notes = []
        for metric, (count, what) in counts.items():
            real, generated = (
                (table.get(metric) or {}).get("real"),
                (table.get(metric) or {}).get("generated"),
            )
            if not (is_number(real) and is_number(generated)) or not generated < real:
                continue
            notes.append(
                f"{metric}: the generated clips score {generated:.4g}, below the real column's {real:.4g} "
                f"(other real clips of their kind, which motion as real as the data's matches on average): "
                f"at {count} {what} that is the estimate's noise, or samples of less variety than real "
                "motion, not a model better than the data; compare models on more clips (eval.num_clips=0: "
                "the whole split) and over eval.repeats"
            )
        return notes


def prepare_comparison(
    real: Clips,
    train_motions: Sequence[np.ndarray],
    train_captions: Sequence[str],
    *,
    skeleton: Skeleton | None,
    representation: str,
    fps: float,
    encoder: FgdEncoder | None = None,
    reference_pool: Sequence[int] | None = None,
) -> Comparison:
    """The real side of `compare` (its arguments but the generated clips), computed once."""
    notes: list[str] = []
    tree = joint_tree(skeleton, representation, real.motion.shape[-1])
    train_features, train_bones = _features(list(train_motions), skeleton, representation, fps)
    effectors, bone_reference = None, None
    if tree is None or real.positions is None:
        if representation == "humanml3d" and tree is None:
            sizes = " and ".join(f"{lay.dataset}'s {f}" for f, lay in humanml3d.LAYOUTS.items())
            notes.append(
                f"no joint tree for the humanml3d representation's {real.motion.shape[-1]} features: only "
                f"{sizes} decode to joint positions here, so the position metrics (jitter, bones, speed, "
                "diversity) are skipped and frechet/features compares statistics of the raw features"
            )
        else:
            notes.append(
                f"no skeleton for {representation} data: position metrics (jitter, bones, speed, "
                "diversity) skipped"
            )
        tree, column = None, {}
    else:
        effectors = end_effectors(tree.names, tree.parents)
        if note := effectors_note(tree.names, effectors):
            notes.append(note)
        found = humanml3d.layout(representation, real.motion.shape[-1])
        if found is not None:
            bone_reference, counted = train_bones, len(train_motions)
            kept = set() if reference_pool is None else {int(i) for i in reference_pool}
            if 0 < len(kept) < len(train_motions):  # (none left: all of them, as before)
                # eval.split=train: the evaluated clips (and their relatives) left out, as for the Fréchet
                # distances' pool: the real column is not measured against a mean it is part of. The
                # frame-weighted mean of all, less the few left out (decoding those alone, not the split)
                out = [train_motions[i] for i in range(len(train_motions)) if i not in kept]
                gone, total = sum(len(m) for m in out), sum(len(m) for m in train_motions)
                out_bones = _features(out, skeleton, representation, fps)[1]
                bone_reference = (np.asarray(train_bones) * total - np.asarray(out_bones) * gone) / (
                    total - gone
                )
                counted = len(kept)
            notes.append(
                f"bone_error: relative to the mean bone lengths of the {counted} training clips "
                f"({found.dataset}'s {found.joints} joints come without skeleton offsets"
                + (
                    f"; the {len(train_motions) - counted} evaluated ones and their relatives left out)"
                    if counted < len(train_motions)
                    else ")"
                )
            )
        else:
            bone_reference = skeleton.bone_lengths()
        column = _metrics_of(real, tree, fps, effectors, bone_reference)
        if len(real.lengths) < 2:
            notes.append(
                "diversity is NaN: the mean distance between pairs of clips, and 1 clip makes no pair; "
                + MORE_CLIPS
            )

    labels = label_function(list(train_captions))
    to_class = labels[0] if labels is not None else (lambda caption: None)
    train_labels = [to_class(c) for c in train_captions]
    real_labels = [to_class(c) for c in real.captions]  # the generated clips share these captions
    real_features = _features(real.clip_motions(), skeleton, representation, fps)[0]
    pool = (
        np.arange(len(train_motions), dtype=np.int64)
        if reference_pool is None
        else np.unique(np.asarray(list(reference_pool), np.int64))
    )
    reference = np.zeros(0, np.int64)
    if len(pool):
        picks = matched_reference(
            real.lengths, real_labels, [len(train_motions[i]) for i in pool], [train_labels[i] for i in pool]
        )
        reference = pool[picks]
    column["frechet/features"] = frechet_distance_of(real_features, train_features[reference])
    matched = (
        "of its real clip's class and nearest its length" if labels else "nearest its real clip's length"
    )
    notes.append(
        "frechet/features and fgd: generated = real vs generated clips; real = real vs as many training "
        f"clips, each {matched} (what two sets of real motion differ by at this sample size)"
    )
    left_out = len(train_motions) - len(pool)
    outside = f" outside the {left_out} evaluated ones" if left_out else ""
    if not len(pool):
        notes.append(
            f"the real column of frechet/features and fgd is NaN: no training clip is left{outside} to "
            "compare the real clips with (evaluate fewer clips with eval.num_clips, or another eval.split)"
        )
    elif len(np.unique(reference)) < len(reference):
        notes.append(
            f"the real column of frechet/features and fgd reuses training clips: {len(pool)} training clips"
            f"{outside} stand in for {len(reference)} real clips"
        )
    if labels and len(pool):
        # matched_reference takes a clip of any class where none of the real clip's is left (or it has
        # none): the note above says "of its real clip's class", so say where that did not hold.
        paired = zip(reference, real_labels, strict=True)
        other = sum(label is None or train_labels[i] != label for i, label in paired)
        if other:
            notes.append(
                f"the real column of frechet/features and fgd: for {other} of the {len(reference)} real "
                f"clips no unused training clip of their class was left{outside} (or the caption names "
                "no class), so a training clip of another class stands in for it: that real column "
                "compares another mix of classes than the generated one"
            )

    class_notes: list[str] = []
    classifier = None
    if labels is None:
        distinct = sorted({c.strip().lower() for c in train_captions})
        class_notes.append(
            f"every training clip has the caption {distinct[0]!r}: one class, conditioning accuracy skipped"
            if len(distinct) == 1
            else f"captions are free text ({len(distinct)} distinct training captions, more than the "
            f"{MAX_CLASSES} classes a caption may name): conditioning accuracy skipped"
            if distinct
            else "no training captions: conditioning accuracy skipped"
        )
    else:
        how = labels[1]
        keep = [i for i, label in enumerate(train_labels) if label is not None]
        if len({train_labels[i] for i in keep}) < 2:
            class_notes.append(
                "fewer than two caption classes in the training split: conditioning accuracy skipped"
            )
        else:
            classifier = fit_classifier(train_features[keep], [train_labels[i] for i in keep])
            known = [i for i, label in enumerate(real_labels) if label in classifier.classes]
            column["conditioning_accuracy"] = classifier.accuracy(
                real_features[known], [real_labels[i] for i in known]
            )
            compared = [label for label in real_labels if label in classifier.classes]
            if not compared:
                class_notes.append(
                    f"conditioning accuracy is NaN: none of the {len(real_labels)} compared clips has a "
                    f"caption class ({how}) of the training split's {len(classifier.classes)}, so there "
                    "is nothing to score (captions that are sentences rather than a small set of labels "
                    "rarely repeat across splits)"
                )
            majority = max(collections.Counter(compared).values(), default=0) / max(len(compared), 1)
            scored = (
                f"; scored on the {len(compared)} of the {len(real_labels)} compared clips whose class "
                "the training split has"
                if len(compared) < len(real_labels)
                else ""
            )
            class_notes.append(
                f"conditioning accuracy: a ridge classifier of motion features trained on {len(keep)} "
                f"training clips, class = {how} ({len(classifier.classes)} classes, chance "
                f"{1 / len(classifier.classes):.3f}; naming the most frequent class of the compared clips "
                f"scores {majority:.3f}){scored}"
            )
            real_accuracy, chance = column["conditioning_accuracy"], 1 / len(classifier.classes)
            if compared and real_accuracy < chance:
                # Seen on one's own mocap: real 0.0, generated 1.0 (4 clips of a speaker the 20 training
                # clips lack, one of them the only clip of its class): read as a model beating the data.
                counts = collections.Counter(train_labels[i] for i in keep)
                fewest = min(counts, key=lambda label: (counts[label], label))
                class_notes.append(
                    f"conditioning accuracy: the real clips score {real_accuracy:.3f}, below chance "
                    f"({chance:.3f}): the classifier does not recognise this split's real motion (other "
                    "recordings or performers than the training split's, or too few training clips per "
                    f"class: {fewest!r} has {counts[fewest]}), so the generated column says how closely "
                    "the samples resemble the training clips, not how well they follow their captions"
                )

    real_latents, reference_windows = None, 0
    if encoder is not None:
        real_latents = encoder.encode(motion_windows(real.clip_motions(), encoder.window))
        train_windows = motion_windows([train_motions[i] for i in reference], encoder.window)
        reference_windows = len(train_windows)
        column["fgd"] = (
            frechet_distance_of(real_latents, encoder.encode(train_windows))
            if len(train_windows)
            else math.nan
        )
    else:  # a row all the same (null in the JSON, '-' in the table), so that every report has the key
        column["fgd"] = None
    return Comparison(
        real=real,
        real_column=column,
        skeleton=skeleton,
        representation=representation,
        fps=fps,
        tree=tree,
        effectors=effectors,
        bone_reference=bone_reference,
        real_features=real_features,
        reference_count=len(reference),
        classifier=classifier,
        to_class=to_class,
        encoder=encoder,
        real_latents=real_latents,
        reference_windows=reference_windows,
        head_notes=tuple(notes),
        class_notes=tuple(class_notes),
    )


def compare(
    real: Clips,
    generated: Clips,
    train_motions: Sequence[np.ndarray],
    train_captions: Sequence[str],
    *,
    skeleton: Skeleton | None,
    representation: str,
    fps: float,
    encoder: FgdEncoder | None = None,
    reference_pool: Sequence[int] | None = None,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every metric of real and generated clips: ({metric: {"real": v, "generated": v}}, notes).

    The classifier is trained on the training clips; its accuracy on the real clips is the ceiling the
    generated ones are measured against. The Fréchet distances compare each side with the real clips; their
    real column compares as many training clips, matched to the real clips' classes and lengths
    (`matched_reference`), with the real clips: what other real motion of the same kind scores.
    reference_pool: the indices of the training clips that real column may take (default all; without
    the real clips themselves when they come from the training split).
    The position metrics take the joints of `joint_tree` (the skeleton's, or those of the HumanML3D layout:
    HumanML3D's 22, KIT-ML's 21); the bone-length error is relative to the skeleton's offsets, or without
    offsets (the HumanML3D layout) to the mean bone lengths of the training clips (`mean_bone_lengths`
    over all their frames).
    `prepare_comparison` computes the real side once and `Comparison.score` the generated one: this is
    the two for one generated set.
    """
    comparison = prepare_comparison(
        real,
        train_motions,
        train_captions,
        skeleton=skeleton,
        representation=representation,
        fps=fps,
        encoder=encoder,
        reference_pool=reference_pool,
    )
    column, notes = comparison.score(generated)
    table = comparison.table(column)
    return table, notes + comparison.below_real_notes(table)


def format_table(table: dict[str, dict[str, Any]], half_widths: dict[str, float | None] | None = None) -> str:
    """The metrics as an aligned text table: metric | real | generated. half_widths: {metric: the half-width
    of the generated value's confidence interval} (eval.repeats > 1), shown as `mean ± half-width`."""

    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, str):
            return value
        return f"{value:.4g}"

    def generated(name: str, value) -> str:
        half = (half_widths or {}).get(name)
        return cell(value) if half is None else f"{cell(value)} ± {half:.2g}"

    rows = [("metric", "real", "generated")] + [
        (name, cell(v.get("real")), generated(name, v.get("generated"))) for name, v in table.items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [" | ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


CONFIDENCE = 0.95  # eval.repeats > 1: the level of the generated column's confidence intervals


def t_quantile(count: int, confidence: float = CONFIDENCE) -> float:
    """Student's t quantile of a two-sided `confidence` interval of the mean of `count` values:
    t_{(1 + confidence) / 2, count - 1}."""
    import scipy.stats

    return float(scipy.stats.t.ppf((1.0 + confidence) / 2.0, count - 1))


def repeat_statistics(values: Sequence[Any], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """One metric of the generated column over n >= 2 repeats: {"values": the n values, "mean", "std",
    "ci95"}. Numbers (float64): their mean, sample standard deviation (ddof=1) and the half-width of the
    `confidence` interval of the mean, t_quantile(n) * std / sqrt(n) (a NaN value makes all three NaN).
    Other values (bone_error/worst_bone's bone name; None where a metric is not computed): "mean" is the
    most frequent value (the earliest repeat's on a tie), "std" and "ci95" None. Numbers mixed with other
    values: those count as NaN."""
    values = list(values)
    if len(values) < 2:
        raise ValueError(f"repeat_statistics needs at least 2 values, got {len(values)}")
    if not any(is_number(v) for v in values):
        mode = collections.Counter(values).most_common(1)[0][0]
        return {"values": values, "mean": mode, "std": None, "ci95": None}
    # Numbers with a None among them (a metric one repeat could not compute): NaN, as a NaN value is.
    x = np.asarray([v if is_number(v) else math.nan for v in values], np.float64)
    std = float(np.std(x, ddof=1))
    half = t_quantile(len(x), confidence) * std / math.sqrt(len(x))
    return {"values": [float(v) for v in x], "mean": float(np.mean(x)), "std": std, "ci95": half}


def _refuse_a_folder(path: Path) -> None:
    if path.is_dir():
        raise EvaluationError(f"eval.output {path} is a folder; eval.output names the metrics file (a .json)")


def _check_output(path: Path) -> None:
    """EvaluationError unless the metrics file can be written at `path` (a folder there, or a folder of
    it that cannot be made or written: a read-only workdir): checked before the sampling, not after,
    and without making anything."""
    _refuse_a_folder(path)
    folder = Path(os.path.abspath(path)).parent
    while not folder.exists() and folder != folder.parent:  # the folder that would hold what is made
        folder = folder.parent
    if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
        why = "permission denied or a read-only file system" if folder.is_dir() else "not a folder"
        raise EvaluationError(
            f"{folder}: cannot write the metrics there ({why}); set --config.eval.output to a .json file in "
            "a writable folder"
        )


def write_new_json(path: Path, payload: Any) -> Path:
    """Write `payload` to `path`, or to `<stem>_1<suffix>`, `_2`, ... when that exists (never overwrite).

    The JSON is written to a hidden file beside `path` (`.<name>.tmp-<host>-<pid>-<random>`, removed
    afterwards, and one left by a killed process of this host at the next write) and then linked to the
    first free name (files.link_new: a link never replaces a file): a full disk or a kill never leaves a
    partial file under these names. A failure is an OSError naming `path`."""
    path = Path(os.path.abspath(path))
    _refuse_a_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(files.json_safe(payload), indent=1, allow_nan=False) + "\n"
    with files.staged_file(path) as temporary, files.writing(path, temporary):
        with open(temporary, "x", encoding="utf-8") as handle:
            handle.write(text)
        for attempt in range(10_000):
            candidate = path if attempt == 0 else path.with_name(f"{path.stem}_{attempt}{path.suffix}")
            try:
                files.link_new(temporary, candidate)
                return candidate
            except FileExistsError:
                continue
    raise EvaluationError(f"{path}: too many files of this name already; set eval.output to a new file")


def check_given_data_root(config, trained_root: str | None, data_set: Collection[str]) -> None:
    """EvaluationError for a data.root given on the command line (`data_set` names it) that holds no
    prepared data and is not the folder the checkpoint's run trained on: most likely a slip of the path,
    which data.source synthetic or beat would fill from data.raw_root without a word before it starts (a
    long build, of a copy at best: eval compares with the data the run trained on). Training prepares a
    missing data.root, as a first run must; here a data.raw_root given on the command line too asks for
    that, and the run's own data.root, gone since, is prepared again as training would."""
    from motion_ddpm_jax.data import beat  # (as `run` imports it: the data readers load when needed)

    root = str(config.data.root)
    if "root" not in data_set or "raw_root" in data_set or not beat.would_prepare(config.data):
        return
    if trained_root and Path(trained_root).resolve() == Path(root).resolve():
        return
    raise EvaluationError(
        f"--config.data.root={root}: no prepared data there (no dataset.json), and not the data the "
        f"checkpoint's run trained on (data.root={trained_root or '(not recorded)'}); eval does not prepare "
        "a data.root given on the command line: check the path, evaluate without --config.data.root (and "
        "without --config, whose data.root is the file's) to read the run's data, or prepare it first "
        f"(`python launch.py --mode prepare --config <config> --config.data.root={shlex.quote(root)}`, or "
        "give --config.data.raw_root too)"
    )


def _repeat_seeds(config) -> list[int]:
    """The sampling seeds of eval.repeats repeats: sample.seed + k for repeat k. EvaluationError naming
    eval.repeats for a count below 1, or a last seed past the sampler's 2**32 - 1."""
    repeats, seed = config.eval.repeats, config.sample.seed
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise EvaluationError(f"eval.repeats is {repeats!r}; expected an integer >= 1 (1 = one sampling)")
    last = int(seed) + repeats - 1
    if last >= 2**32:
        raise EvaluationError(
            f"eval.repeats={repeats} with sample.seed={seed} would sample with seeds up to {last}, past "
            f"the largest, 2**32 - 1; lower sample.seed or eval.repeats"
        )
    return [int(seed) + k for k in range(repeats)]


def run(
    config,
    workdir: str | os.PathLike,
    log=print,
    data_from_checkpoint: bool = False,
    data_set: Collection[str] = (),
) -> dict[str, Any]:
    """`launch.py --mode eval`: metrics of a checkpoint's samples against real clips of eval.split.

    One sample per chosen real clip, with its first caption and its length (capped at the model's
    max_motion_length), sampled with config.sample.*: eval.repeats times, repeat k with seed
    sample.seed + k, the real column computed once. Prints the table (with repeats, the generated
    column's mean ± the half-width of its 95% confidence interval) and writes it as JSON to eval.output
    (default <workdir>/eval/metrics_step<step>.json; never overwritten: a suffix is added); with repeats,
    `metrics` holds the means and `repeats` each repeat's values (`repeat_statistics`).
    The real clips come from config.data.*, or with `data_from_checkpoint` (launch.py without --config)
    from the data the checkpoint's run trained on, but for the data fields named in `data_set` (set on
    the command line: `with_checkpoint_data`).
    """
    from motion_ddpm_jax import sampling
    from motion_ddpm_jax.data import beat

    if config.eval.split not in ("train", "val", "test"):
        raise EvaluationError(f"eval.split is {config.eval.split!r}; expected train, val or test")
    seeds = _repeat_seeds(config)
    if config.eval.output:
        _refuse_a_folder(Path(config.eval.output))  # before loading, as every check of the request
    step = int(config.sample.checkpoint_step)
    loaded = sampling.load_model(workdir, step=None if step < 0 else step, use_ema=config.sample.use_ema)
    sampling.check_settings(loaded, sampling.sampler_settings(config.sample))  # before the data, not after
    output = (
        Path(config.eval.output)
        if config.eval.output
        else Path(workdir) / "eval" / f"metrics_step{loaded.step}.json"
    )
    if jax.process_index() == 0:
        _check_output(output)  # before the sampling, not after it
    if data_from_checkpoint:
        trained_root = loaded.metadata.get("data_root")
        config = with_checkpoint_data(config, loaded.metadata["config"], data_set, trained_root)
        log(
            f"real clips from data.root={config.data.root} (--config.data.root; the checkpoint's run trained "
            f"on {trained_root or '(not recorded)'})"
            if "root" in data_set
            else f"real clips from the data the checkpoint's run trained on: data.root={config.data.root}"
        )
    check_given_data_root(config, (getattr(loaded, "metadata", None) or {}).get("data_root"), data_set)
    # The refusals name the data the run trained on and how to evaluate on it: "point data.root at the
    # data it was trained on" had left the user to find which that was.
    trained_root = (getattr(loaded, "metadata", None) or {}).get("data_root") or "(not recorded)"
    trained_on = f"its run trained on data.root={trained_root}"
    way_on = (
        "evaluate without --config and --config.data.* overrides (the data the checkpoint's run trained "
        "on), or set --config.data.root to data of its skeleton, representation and rate"
    )
    size, representation = np.asarray(loaded.mean).size, getattr(loaded, "representation", "")
    # (An empty data.root is no folder: `dataset_from_config` names the field, not ./dataset.json's absence.)
    if beat.would_prepare(config.data) and config.data.representation != representation:
        # Refused before preparing: a config naming another layout (configs/beat_rot.py, which named
        # axis_angle before rotation_6d, given with a run of that time) had built the whole dataset first.
        raise EvaluationError(
            f"the checkpoint in {workdir} takes {representation} features ({trained_on}) but the config "
            f"names data.representation={config.data.representation!r}, and data.root={config.data.root} "
            f"is not prepared: preparing it would build data this checkpoint cannot be evaluated on; {way_on}"
        )
    dataset = beat.dataset_from_config(config, log=log)
    if dataset.feature_size != size:
        raise EvaluationError(
            f"the checkpoint in {workdir} takes {size} {representation} features per frame "
            f"({trained_on}) but the dataset at data.root={dataset.root} holds {dataset.feature_size} "
            f"{dataset.representation} features per frame (data of another skeleton or representation); "
            f"{way_on}"
        )
    if not math.isclose(float(loaded.fps), float(dataset.fps), rel_tol=1e-6):
        raise EvaluationError(
            f"the checkpoint in {workdir} was trained on motion at {float(loaded.fps):g} fps ({trained_on}) "
            f"but the dataset at data.root={dataset.root} is at {float(dataset.fps):g} fps (every "
            f"per-second metric would be scaled by the wrong rate); {way_on}"
        )
    matched = check_same_statistics(loaded, dataset, config, workdir)  # before sampling: other data refused
    chain = init_chain(getattr(loaded, "metadata", None) or {}, loaded.mean, loaded.std)
    split = dataset.split(config.eval.split)
    indices = chosen_indices(split, int(config.eval.num_clips))
    evaluated = [split.ids[i] for i in indices]
    forgetting_notes = init_from_notes(chain, matched, evaluated, dataset, config.eval.split, log)
    motions = [split.motions[i][: int(loaded.max_motion_length)] for i in indices]
    captions = [split.captions[i][0] for i in indices]
    lengths = [len(m) for m in motions]
    settings = sampling.sampler_settings(config.sample)
    used = sampling.settings_used(settings, loaded, bool(config.sample.use_ema))
    times = "" if len(seeds) == 1 else f", {len(seeds)} times: seeds {seeds[0]}..{seeds[-1]}"
    log(
        f"evaluating step {loaded.step}: {len(motions)} {config.eval.split} clips, one sample each{times} "
        f"({sampling.settings_text(used)})"
    )
    for note in (sampling.spacing_note(loaded, settings), sampling.unread_settings_note(settings, loaded)):
        if note:
            log(note)
    real_motion, real_lengths = _pad(motions)
    real = Clips(
        real_motion,
        real_lengths,
        tuple(captions),
        decode_positions(real_motion, dataset.skeleton, dataset.representation),
    )
    train = dataset.split("train")
    encoder, notes = fgd_encoder(config, dataset, workdir)
    notes = forgetting_notes + notes
    other_rate = humanml3d.other_rate(dataset.representation, dataset.feature_size, float(dataset.fps))
    if other_rate is not None:  # (a load-time warning alone had not reached the report)
        found, _ = other_rate
        notes.append(
            f"the data were read at data.fps={float(dataset.fps):g}, but {found.dataset}-layout features "
            f"are {found.fps:g} fps motion: every per-second metric (speeds, jitter) is scaled by "
            f"{float(dataset.fps) / found.fps:g}, its square or its cube, in both columns, unless the clips "
            "were resampled to that rate"
        )
    if cut := cut_captions_note(loaded, captions, evaluated, config.eval.split):
        notes.append(cut)
    pool = None
    if config.eval.split == "train":  # the real column's reference: training clips other than these
        pool = np.setdiff1d(np.arange(len(train)), related_clips(train.ids, indices))
        notes.append(
            "eval.split=train: the conditioning classifier was trained on the training split, these clips "
            "among them, so the real column's accuracy is its accuracy on its own training clips"
        )
    comparison = prepare_comparison(  # the real column: once, whatever the seed
        real,
        [m[: int(loaded.max_motion_length)] for m in train.motions],
        [c[0] for c in train.captions],
        skeleton=dataset.skeleton,
        representation=dataset.representation,
        fps=float(dataset.fps),
        encoder=encoder,
        reference_pool=pool,
    )
    quantile = t_quantile(len(seeds)) if len(seeds) > 1 else None  # (scipy) before the sampling, not after
    posed_here, posing_note = rotations_posed_on_the_data(loaded, dataset)
    if posing_note:
        notes.append(posing_note)
    columns, sample_seconds, compare_notes = [], [], []
    for repeat, seed in enumerate(seeds):
        start = time.perf_counter()
        with warnings.catch_warnings():  # the real clips' captions, cut as training cut them
            warnings.simplefilter("ignore", sampling.CaptionCutWarning)
            out = sampling.generate(loaded, captions, lengths, num_samples=1, **{**settings, "seed": seed})
        sample_seconds.append(time.perf_counter() - start)
        sampling.check_finite(out, loaded, workdir)
        generated_lengths = np.asarray(out["lengths"], np.int64)
        if not np.array_equal(generated_lengths, lengths):
            raise RuntimeError(
                f"sampling returned lengths {generated_lengths[:8]}..., asked for {lengths[:8]}..."
            )
        generated_positions = out.get("positions")
        if posed_here and generated_positions is not None:
            generated_positions = decode_positions(out["motion"], dataset.skeleton, dataset.representation)
        generated = Clips(
            np.asarray(out["motion"], np.float32),
            generated_lengths,
            tuple(captions),
            None
            if real.positions is None or generated_positions is None
            else np.asarray(generated_positions),
        )
        column, repeat_notes = comparison.score(generated)
        columns.append(column)
        compare_notes += [note for note in repeat_notes if repeat == 0 or note not in compare_notes]
        if len(seeds) > 1:
            log(f"repeat {repeat + 1}/{len(seeds)} (seed {seed}): sampled in {sample_seconds[-1]:.1f}s")
    notes += compare_notes
    repeats = None
    if len(seeds) == 1:
        table, half_widths = comparison.table(columns[0]), None
    else:
        names = list(dict.fromkeys(name for column in columns for name in column))
        statistics = {name: repeat_statistics([c.get(name) for c in columns]) for name in names}
        table = comparison.table({name: stats["mean"] for name, stats in statistics.items()})
        half_widths = {name: stats["ci95"] for name, stats in statistics.items()}
        freedom = len(seeds) - 1
        notes.insert(
            0,
            f"generated = mean ± the half-width of its {100 * CONFIDENCE:g}% confidence interval over "
            f"{len(seeds)} repeats of the sampling, seeds {seeds[0]}..{seeds[-1]} (Student's t, {freedom} "
            f"degree{'s' * (freedom != 1)} of freedom: {quantile:.4g} x std / sqrt({len(seeds)}), std the "
            "sample standard deviation); the real column does not depend on the seed",
        )
        repeats = {
            "count": len(seeds),
            "seeds": seeds,
            "confidence": CONFIDENCE,
            "t_quantile": quantile,
            "sample_seconds": [round(s, 2) for s in sample_seconds],
            "generated": statistics,
        }
    notes += comparison.below_real_notes(table)  # (of the means, with repeats)
    unit, units = None, "no joint positions: no position metrics"
    if real.positions is not None:
        unit = position_unit(dataset.skeleton, dataset.representation, dataset.feature_size)
        units = units_text(unit)
    log(format_table(table, half_widths))
    log(f"units: {units}")
    for note in notes:
        log(f"note: {note}")
    record = {
        "step": int(loaded.step),
        "workdir": os.path.abspath(workdir),
        "data_root": os.path.abspath(dataset.root),
        # not "this run's": the data of a run it descends from through train.init_from (a forgetting check)
        "data_trained_on": (
            {0: "this run's", 1: "init_from source's"}.get(matched)
            or f"an earlier run's in its init_from chain: {chain[matched]['workdir']}"
        ),
        "split": config.eval.split,
        "split_seed": split_seed(dataset),
        "num_clips": len(motions),
        "clips": clips_fingerprint([split.ids[i] for i in indices], lengths),
        "fps": float(dataset.fps),
        "position_unit": unit,
        "units": units,
        "metrics": table,
        "notes": notes,
        "sample": used,
        "diffusion_steps": int(loaded.schedule.num_steps),
        "eval": {"split": config.eval.split, "num_clips": int(config.eval.num_clips)},
        "fgd_autoencoder": None if encoder is None else autoencoder_record(autoencoder_dir(config), encoder),
        "versions": {"motion_ddpm_jax": __version__, "jax": jax.__version__, "numpy": np.__version__},
        "device": f"{jax.default_backend()}: {jax.devices()[0].device_kind}",
        "software": provenance.software(jax.devices()[0]),  # all of it, as run.json and checkpoints hold
        "created_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sample_seconds": round(sample_seconds[0], 2),  # the first sampling: compiling included
    }
    if repeats is not None:
        record["repeats"] = repeats
    if jax.process_index() != 0:
        return record
    log(comparable_line(record))
    written = write_new_json(output, record)
    # (written is absolute: a relative workdir's first eval had been said to keep a file that did not exist)
    if Path(written) != Path(os.path.abspath(output)):  # as --mode sample says of a folder that holds files
        log(f"{output} exists already (kept as it is); writing the metrics to {written} instead")
    log(f"wrote {written}")
    return {**record, "output": str(written)}


def cut_captions_note(loaded, captions: Sequence[str], ids: Sequence[str], split: str) -> str | None:
    """The report's note of evaluated captions (of the clips `ids`) longer than model.text_max_length
    holds besides bos and eos, whose first tokens alone condition their samples (as training read its
    own; generate's CaptionCutWarning is silenced here: one note, not a warning per repeat); None where
    each fits."""
    tokenizer = getattr(loaded, "tokenizer", None)  # (the tests' stand-in models have none)
    if tokenizer is None:
        return None
    max_length = int(loaded.text_max_length)
    long = tokenizer.overlong(captions, max_length)
    if not long:
        return None
    from motion_ddpm_jax.sampling import shown_caption

    index, count = long[0]
    return (
        f"{len(long)} of the {len(captions)} {split} captions evaluated take more than the {max_length - 2} "
        f"tokens that model.text_max_length={max_length} holds besides bos and eos (e.g. clip {ids[index]}'s "
        f"{shown_caption(captions[index])}, {count} tokens): their samples are of their first "
        f"{max_length - 2} tokens, as training read its captions"
    )


def comparable_line(record: dict[str, Any]) -> str:
    """What two evaluations must share for their numbers to compare, as one line of the log: the clips
    (their list's sha256) and the FGD autoencoder (folder, weights' sha256, steps, seed), as the report
    holds them, so that two printed tables can be matched without opening their JSON."""
    fgd = record.get("fgd_autoencoder")
    if fgd is None:
        used = "no FGD autoencoder"
    else:
        settings = fgd.get("settings", {})
        used = (
            f"FGD autoencoder {fgd['directory']} (weights sha256 {fgd['weights_sha256'][:12]}, "
            f"{settings.get('steps', '?')} steps, seed {settings.get('seed', '?')})"
        )
    return f"compare with evaluations of the same clips (sha256 {record['clips']['sha256'][:12]}) and {used}"
