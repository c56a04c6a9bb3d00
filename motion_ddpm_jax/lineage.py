"""Which data a checkpoint may be evaluated on, by its lineage: the runs whose weights led to it.

The statistics check (`check_same_statistics`: other statistics mean another training split, whose eval
split may hold clips the checkpoint trained on), the chain of train.init_from sources (`init_chain`), the
data a checkpoint's run trained on (`with_checkpoint_data`), and what a forgetting check (a fine-tuned run
evaluated on the data of a run it descends from) must say: the clips its fine-tuning data held
(`fine_tuned_on`, `init_from_notes`), the clips of one motion (`related_clips`), the skeleton its
rotations are posed on (`rotations_posed_on_the_data`).

Apart from `evaluate` because these read checkpoints' records and dataset folders, not motion, and
`launch.py` uses `with_checkpoint_data` before any evaluation starts.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from motion_ddpm_jax.errors import EvaluationError

STATS_TOLERANCE = 1e-5  # relative: the same data gives the same float32 statistics, bit for bit


def split_seed(dataset) -> int | None:
    """The data.split_seed the dataset was prepared with, as its dataset.json records it (`--mode
    prepare`); None where it records none (a folder written otherwise: its splits are its own)."""
    fingerprint = dataset.info.get("fingerprint")
    options = fingerprint.get("options") if isinstance(fingerprint, dict) else None
    seed = options.get("split_seed") if isinstance(options, dict) else None
    return None if seed is None else int(seed)


def _same_statistics(mean_here, std_here, mean_run, std_run) -> tuple[bool, float, float]:
    """(equal to a relative STATS_TOLERANCE, largest mean gap in units of the run's std, largest relative
    std change) of a dataset's statistics against a run's. The mean gap is that of the features whose
    means differ (0 where none does): a mean within the tolerance of its value (a feature far from 0 with
    a small std) had been named as a gap of several std beside stds that did differ."""
    mean_run, std_run = np.asarray(mean_run, np.float64), np.asarray(std_run, np.float64)
    mean_gap = np.abs(mean_here - mean_run)  # within the tolerance of the std or of the value
    mean_ok = mean_gap <= STATS_TOLERANCE * np.maximum(std_run, np.abs(mean_run))
    std_ratio = np.abs(std_here / std_run - 1.0)
    same = bool(mean_ok.all() and (std_ratio <= STATS_TOLERANCE).all())
    return same, float(np.max(np.where(mean_ok, 0.0, mean_gap / std_run))), float(np.max(std_ratio))


def init_chain(metadata: dict[str, Any], mean, std) -> list[dict[str, Any]]:
    """The runs whose weights led to a checkpoint, newest first: its own run, the run its train.init_from
    named, that run's own source, and so on (as far as the checkpoints record: versions before 2026-12-07
    recorded the first source only), each {"workdir", "step", "data_root", "mean", "std"}: where it is (None
    for the checkpoint's own run), the data it trained on and that data's training-split statistics. A
    fine-tuned run's own data's statistics are in its record (`data_statistics`, or where a record lacks
    them the checkpoint's); the first run's are those every later one normalises with (`mean`, `std`: the
    checkpoint's)."""
    runs = []
    here = {"workdir": None, "step": None, "data_root": metadata.get("data_root")}
    record = metadata.get("init_from")
    while isinstance(record, dict):
        own = record.get("data_statistics") or {"mean": mean, "std": std}
        runs.append({**here, "mean": own["mean"], "std": own["std"]})
        here = {key: record.get(key) for key in ("workdir", "step", "data_root")}
        record = record.get("init_from")
    runs.append({**here, "mean": mean, "std": std})
    return runs


def check_same_statistics(loaded, dataset, config, workdir) -> int:
    """EvaluationError unless the dataset's training-split statistics (mean / std, as the dataset gives
    them) are the ones the checkpoint trained with (its metadata's mean / std), to a relative
    STATS_TOLERANCE. Other statistics mean another training split (another data.root, data.split_seed
    or dataset), so the clips of eval.split may be clips the checkpoint trained on. A run started from
    another's weights (train.init_from) normalises with that run's statistics: its own data's, which its
    checkpoints record apart, are compared, and those of the data of the runs it descends from
    (`init_chain`) are accepted too: evaluating a fine-tuned run on the data it started from shows what it
    kept of it (a forgetting check), on clips that the source's run held out as well. Returns the
    position in `init_chain` of the run whose data matched: 0 for the checkpoint's own."""
    mean_here, std_here = np.asarray(dataset.mean, np.float64), np.asarray(dataset.std, np.float64)
    metadata = getattr(loaded, "metadata", None) or {}
    chain = init_chain(metadata, loaded.mean, loaded.std)
    for position, run in enumerate(chain):
        same, gap, change = _same_statistics(mean_here, std_here, run["mean"], run["std"])
        if same:
            return position
        if position == 0:
            mean_gap, std_change = gap, change
    from motion_ddpm_jax.train import statistics_change

    gaps = statistics_change(mean_gap, std_change, STATS_TOLERANCE)
    saved = metadata.get("config") if isinstance(metadata.get("config"), dict) else {}
    saved_data = saved.get("data") if isinstance(saved.get("data"), dict) else {}
    trained_root = metadata.get("data_root") or saved_data.get("root") or "(not recorded)"
    trained_seed = saved_data.get("split_seed", "(not recorded)")
    trained_floor = saved_data.get("std_floor", "(not recorded)")
    seed_here = split_seed(dataset)
    seed_here = (
        f"{int(config.data.split_seed)} (the config's; the dataset records none)"
        if seed_here is None
        else seed_here
    )
    raise EvaluationError(
        f"the checkpoint in {workdir} trained on other data than data.root={dataset.root} holds: that "
        f"dataset's training-split statistics differ from the checkpoint's ({gaps}), "
        "so its "
        f"{config.eval.split} split may hold clips the checkpoint trained on. The checkpoint's run trained "
        f"on data.root={trained_root} with data.split_seed={trained_seed} and data.std_floor="
        f"{trained_floor}; here data.root={dataset.root}, data.split_seed={seed_here}, data.std_floor="
        f"{config.data.std_floor:g}. Evaluate without --config and --config.data.* overrides (the data the "
        f"checkpoint's run trained on), or set --config.data.root (and --config.data.split_seed, "
        f"--config.data.std_floor) to that run's values"
    )


def with_checkpoint_data(
    config, saved: dict[str, Any], keep: Collection[str] = (), trained_root: str | None = None
):
    """A copy of `config` whose data.* are those the checkpoint's run trained on (`saved`: its config, as
    the checkpoint's metadata holds it), but for the data fields named in `keep` (those a user set on the
    command line: config's values stay). A data field the saved config lacks counts as its default, as
    when the run resumes (`config.with_defaults`). A relative data.root becomes `trained_root` (the
    absolute folder the run trained on, as its checkpoint records it) where that exists, unless the
    relative one names that same folder from here: evaluating from another folder reads the run's data,
    rather than preparing it anew there, or reading another folder of the same relative name there (a
    demo set prepared in another clone had been read, without its FGD autoencoder). The relative one
    stays where the trained folder is gone (data moved, or an older checkpoint that records none)."""
    import ml_collections

    from motion_ddpm_jax import config as config_lib

    data = config_lib.with_defaults(saved)["data"]
    root = Path(str(data["root"]))
    if trained_root and not root.is_absolute() and Path(trained_root).is_dir():
        same = root.exists() and root.resolve() == Path(trained_root).resolve()
        if not same:
            data["root"] = str(trained_root)
    data.update({name: config.data[name] for name in keep})
    out = ml_collections.ConfigDict(config.to_dict())
    out.data = ml_collections.ConfigDict(data)
    return out


def _recording_of(clip_id: str, ids: Collection[str]) -> str:
    """The motion a HumanML3D-layout clip id comes from: its sub-clip tag cut (`000004#0.5-3`) and its
    mirror's 'M' (`M000004`, where `000004` is a clip of the split too)."""
    base = clip_id.split("#", 1)[0]
    return base[1:] if base.startswith("M") and base[1:] in ids else base


def fine_tuned_on(
    roots: Sequence[str | os.PathLike | None],
    evaluated: Sequence[str],
    here: str | os.PathLike | None = None,
) -> tuple[list[str] | None, list[Path]]:
    """(the clips of `evaluated` that runs trained on the data at `roots` trained on, by their split files
    `<root>/train.txt`; the split files that list any) for eval of a fine-tuned run on the data of a run it
    descends from (a forgetting check): that run held those clips out, but the later runs' data (`roots`:
    the fine-tuned run's, and those of the runs between) may split the same recordings otherwise (on 12 of
    12 here: the demo prepared with split_seed 0 and 2), and the metrics would then say what they learned
    of them, not what was kept. A clip counts by its motion (`_recording_of`: a sub-clip's or mirrored
    copy's id is its clip's). `here`: the evaluated data's folder; an id of both whose motion file reads in
    both folders and differs is another recording of the same name (two datasets that number their clips
    alike: one's own data fine-tuned from HumanML3D), not counted. (None, [the file]) where a split file
    cannot be read; (None, []) where a root is not recorded (None)."""
    seen: set[str] = set()
    files = []
    for root in roots:
        if not root:
            return None, []
        path = Path(str(root)) / "train.txt"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None, [path]
        trained = {line.strip() for line in text.splitlines() if line.strip()}
        bases = {clip_id.split("#", 1)[0] for clip_id in trained} | {c.split("#", 1)[0] for c in evaluated}
        motions: dict[str, list[str]] = {}
        for clip_id in sorted(trained):
            motions.setdefault(_recording_of(clip_id, bases), []).append(clip_id)
        found = {
            clip_id
            for clip_id in evaluated
            if any(
                here is None or _same_motion(Path(str(root)), Path(here), other)
                for other in motions.get(_recording_of(clip_id, bases), [])
            )
        }
        if found:
            files.append(path)
        seen |= found
    return [clip_id for clip_id in evaluated if clip_id in seen], files


def _same_motion(root: Path, here: Path, clip_id: str) -> bool:
    """Whether clip `clip_id` of the datasets at `root` and `here` may be one motion: False only where its
    motion file (the prepared layout's motions/<id>.npy, HumanML3D's new_joint_vecs/<id>.npy) reads in both
    and the arrays differ."""
    arrays = []
    for folder in (root, here):
        for sub in ("motions", "new_joint_vecs"):
            file = folder / sub / f"{clip_id}.npy"
            if file.is_file():
                try:
                    arrays.append(np.load(file, allow_pickle=False))
                except (OSError, ValueError):
                    return True
                break
        else:
            return True
    return arrays[0].shape == arrays[1].shape and bool(np.array_equal(arrays[0], arrays[1]))


def related_clips(ids: Sequence[str], chosen: Sequence[int]) -> np.ndarray:
    """Indices of the clips of `ids` that show the motion of a `chosen` one: itself, and in the
    HumanML3D layout its sub-clips and its mirrored copy ('M' ids), which would otherwise stand in for it
    in the real column's reference of an eval on the training split."""
    bases = {clip_id.split("#", 1)[0] for clip_id in ids}
    recordings = [_recording_of(clip_id, bases) for clip_id in ids]
    wanted = {recordings[i] for i in chosen}
    return np.array([i for i, r in enumerate(recordings) if r in wanted], np.int64)


def rotations_posed_on_the_data(loaded, dataset) -> tuple[bool, str | None]:
    """(whether to pose the generated motion on the evaluated data's skeleton, a note saying so) for
    rotation data (`representation.ROTATION_REPRESENTATIONS`). Rotations carry no bone lengths: sampling poses
    them on the skeleton of the data the checkpoint's run trained on, and the real clips are posed on the
    evaluated data's. Those differ in a forgetting check (a run fine-tuned on a taller speaker, evaluated on
    its source's data), where the generated column had measured the two skeletons' difference as the model's:
    a 5.5% bone error where rotations can have none, and speeds and distances scaled by the other figure's
    size. Posed on the data's skeleton, both columns measure the motion on one figure. (False, None) for other
    data, or where the skeletons are the same."""
    from motion_ddpm_jax.representation import ROTATION_REPRESENTATIONS  # (jax: imported when needed)

    mine, theirs = getattr(loaded, "skeleton", None), dataset.skeleton
    if (
        dataset.representation not in ROTATION_REPRESENTATIONS
        or mine is None
        or theirs is None
        or mine == theirs
    ):
        return False, None
    if tuple(mine.parents) != tuple(theirs.parents):  # (train.load_init_from refuses these)
        return False, None
    lengths, reference = mine.bone_lengths(), theirs.bone_lengths()
    gap = float(np.max(np.abs(lengths - reference) / np.maximum(reference, 1e-12)))
    return True, (
        f"the generated rotations are posed on this data's skeleton ({dataset.root}), as its real clips "
        f"are, not on that of the data the checkpoint's run trained on (bones differ by up to {gap:.1%}; "
        "the samples of --mode sample stand on that one): both columns measure the motion on one figure"
    )


def init_from_notes(
    chain, matched: int, evaluated: Sequence[str], dataset, split: str, log=print
) -> list[str]:
    """What eval says of the data it evaluates on where the checkpoint descends from other runs (`chain`,
    `init_chain`; `matched`, the position in it of the run whose data matched, `check_same_statistics`):
    for a forgetting check (matched > 0) it logs whose data these are and returns the notes on the
    `evaluated` clips of `split` its fine-tuning data held (`fine_tuned_on`); for a run started from
    another's weights, evaluated on its own data, it logs that its source trained on other data."""
    notes = []
    if matched:  # the data of a run it descends from: a forgetting check
        # The runs since that one trained on their own data, which may hold these clips.
        seen, files = fine_tuned_on([run["data_root"] for run in chain[:matched]], evaluated, dataset.root)
        runs = "the fine-tuned run" if matched == 1 else f"the {matched} fine-tuned runs since"
        if seen is None:
            notes.append(
                f"data_trained_on: the training split of data {runs} trained on "
                f"({files[0] if files else 'a data.root not recorded'}) cannot be read here, so whether "
                f"it fine-tuned on some of these {len(evaluated)} {split} clips (data that "
                "split the same recordings otherwise) is not known"
            )
        elif seen:
            from motion_ddpm_jax.config import listed

            notes.append(
                f"data_trained_on: {len(seen)} of the {len(evaluated)} {split} clips evaluated "
                f"({listed(seen, 3)}) are clips {runs} trained on ({' and '.join(map(str, files))} "
                f"list{'s' * (len(files) == 1)} them: data that split the recordings otherwise): on those "
                "the metrics say what was learned of them, not what was kept; evaluate a forgetting check "
                "on recordings its fine-tuning data left out"
            )
        held = (
            "its train clips are those that run trained on (eval.split=train)"
            if split == "train"
            else f"its {split} clips were held out of that run's training"
        )
        run = chain[matched]
        who = (
            f"the run whose weights it started from ({run['workdir']}, step {run['step']})"
            if matched == 1
            else f"a run it descends from through train.init_from ({run['workdir']}, step {run['step']}), "
            f"by way of {chain[1]['workdir']}, the run it started from"
        )
        statistics = (
            "those the checkpoint normalises with"
            if matched == len(chain) - 1
            else "those its checkpoints record of that run's data"
        )
        log(
            f"data.root={dataset.root} is not the data the checkpoint's run trained on but that of {who}: "
            f"its training-split statistics are {statistics}, and {held}. The metrics say what the "
            "fine-tuned run kept of that data"
            + (" (but see the note on data_trained_on below)" if notes else "")
        )
    else:
        # A run on this very folder split it as here: its eval.split clips were not its training clips.
        here = Path(dataset.root).resolve()
        elsewhere = [
            run
            for run in chain[1:]
            if not (run["data_root"] and Path(str(run["data_root"])).resolve() == here)
        ]
        if elsewhere:
            first, *before = elsewhere
            more = "".join(
                f" (and before it {run['workdir']}, step {run['step']}, on data.root={run['data_root']})"
                for run in before
            )
            log(
                f"the checkpoint's run started from the weights of {first['workdir']} (step "
                f"{first['step']}), trained on data.root={first['data_root']}{more}: the "
                f"{split} clips here may be clips {'that run' if not before else 'those runs'} "
                "trained on, unless the datasets split their recordings alike"
            )
    return notes
