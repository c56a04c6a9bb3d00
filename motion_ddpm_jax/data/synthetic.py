"""Procedural demo data in the raw BEAT layout, whose words decide the motion.

`write_demo_dataset(root)` writes `root/<speaker id>/<id>_<name>_0_<n>_<n>.bvh` with a matching
`.TextGrid`, as the BEAT release does, so the demo runs the real readers and the real preparation. Every
recording is a row of "sentences" separated by silent rest pauses of 0.7-1.5 s; a sentence (1-3 s) holds
one gesture word, spoken while its gesture plays (the word's interval spans the gesture exactly), and
sometimes a filler word ("and", "now", "look", "so" before; "okay", "right", "there" after) spoken in
rest. Cutting a transcript at pauses >= 0.5 s therefore gives one clip per gesture, captioned with its
words. The skeleton is `beat_skeleton()` (88 joints, cm, Y up, facing +Z, the character's right on -X).

The motion: a rest pose with the arms down at the sides (BEAT's zero pose is a T-pose), small idle motion
(breathing, sway, head and arm drift, root sway of about a centimetre), and for each sentence its
gesture: a smooth function of normalised time u in [0, 1] giving Euler offsets (ZXY, degrees) from the rest
pose for the joints it moves, zero with zero velocity at u = 0 and 1. Each speaker has its own amplitude
(+-20%), speed (+-20%) and rest posture. Everything is a function of the seed and the options.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from motion_ddpm_jax.data.bvh import write_bvh
from motion_ddpm_jax.data.textgrid import write_textgrid
from motion_ddpm_jax.files import sha256_of, staged_folder, writing
from motion_ddpm_jax.skeleton import beat_skeleton

GENERATOR_VERSION = 1  # bump whenever the output for given options changes
MANIFEST_NAME = "synthetic.json"
EULER_ORDER = "ZXY"
ROOT_HEIGHT_CM = 92.0  # hips height that puts BEAT's feet on the floor (y = 0)
SPEAKER_NAMES = ("ada", "ben", "cleo", "dev", "eli", "fay", "gus", "hana")
WORDS_BEFORE = ("and", "now", "look", "so")
WORDS_AFTER = ("okay", "right", "there")
PAUSE_S = (0.7, 1.5)  # silent rest between sentences (and before the first, after the last)
MIN_SENTENCE_S, MAX_SENTENCE_S = 1.0, 3.0
AMPLITUDE_RANGE = (0.8, 1.2)  # per speaker
SPEED_RANGE = (0.8, 1.2)  # per speaker

Pose = dict[str, np.ndarray]  # joint name -> Euler offsets from the rest pose [N, 3] (Z, X, Y degrees)

# Arms down at the sides, elbows a little bent. Angles are (Z, X, Y) in degrees, BVH order ZXY; for the
# right arm (bone along -X) +Z lowers it, +X turns it inwards, +Y swings it forwards; the left mirrors.
REST_POSE = {
    "RightArm": (78.0, 0.0, 0.0),
    "LeftArm": (-78.0, 0.0, 0.0),
    "RightForeArm": (0.0, 0.0, 15.0),
    "LeftForeArm": (0.0, 0.0, -15.0),
}


def mirror(angles) -> np.ndarray:
    """Left-side angles from right-side ones (reflection in the plane x = 0): (Z, X, Y) -> (-Z, X, -Y)."""
    return np.asarray(angles, dtype=np.float64) * np.array([-1.0, 1.0, -1.0])


# ------------------------------------------------------------------------------------------ time shapes
def _smootherstep(x: np.ndarray) -> np.ndarray:
    """0 -> 1 on [0, 1] with zero velocity and acceleration at both ends."""
    x = np.clip(x, 0.0, 1.0)
    return x**3 * (x * (6.0 * x - 15.0) + 10.0)


def _envelope(u: np.ndarray, ramp: float = 0.25) -> np.ndarray:
    """Blend weight: rises over the first `ramp` of u, holds 1, falls over the last `ramp`."""
    return _smootherstep(u / ramp) * _smootherstep((1.0 - u) / ramp)


def _hold(u: np.ndarray, ramp: float = 0.25) -> np.ndarray:
    """Time within the hold of `_envelope`, 0 -> 1 (0 before, 1 after)."""
    return np.clip((u - ramp) / (1.0 - 2.0 * ramp), 0.0, 1.0)


def _bumps(v: np.ndarray, count: int) -> np.ndarray:
    """`count` smooth rises to 1 and back to 0 over v in [0, 1] (zero velocity where they meet 0)."""
    return np.sin(np.pi * count * v) ** 2


def _swings(v: np.ndarray, count: int) -> np.ndarray:
    """`count` side-to-side swings (+-1 at most) over v in [0, 1], fading in and out smoothly."""
    return np.sin(2.0 * np.pi * count * v) * np.sin(np.pi * v) ** 2


def _toward(weight: np.ndarray, joint: str, target) -> np.ndarray:
    """Offsets [N, 3] that move `joint` from its rest angles to `target` as `weight` goes 0 -> 1."""
    rest = np.asarray(REST_POSE.get(joint, (0.0, 0.0, 0.0)))
    return weight[:, None] * (np.asarray(target, dtype=np.float64) - rest)


def _about(weight: np.ndarray, z: float = 0.0, x: float = 0.0, y: float = 0.0) -> np.ndarray:
    """Offsets [N, 3] of weight * (z, x, y) degrees."""
    return weight[:, None] * np.array([z, x, y])


def _both_sides(pose: Pose) -> Pose:
    """Add the mirror image of every 'Right*' joint's offsets to its 'Left*' twin."""
    out = dict(pose)
    for joint, offsets in pose.items():
        if joint.startswith("Right"):
            twin = "Left" + joint[len("Right") :]
            out[twin] = out.get(twin, 0.0) + mirror(offsets)
    return out


# --------------------------------------------------------------------------------------------- gestures
@dataclasses.dataclass(frozen=True)
class Gesture:
    """One word's motion.

    word: the gesture word, as spoken in the TextGrid.
    duration_s: its length at speed 1 (each speaker's speed divides it).
    pose: (u [N] in [0, 1], amplitude ~0.8..1.2) -> {joint: Euler offsets from REST_POSE [N, 3] (Z, X, Y)};
      zero with zero velocity at u = 0 and u = 1. `amplitude` scales the gesture's size but never what
      defines it (the wave stays above the head, the clap's hands still meet).
    """

    word: str
    description: str
    duration_s: float
    pose: Callable[[np.ndarray, float], Pose]


def _wave(u: np.ndarray, amplitude: float) -> Pose:
    raised = _envelope(u)
    swing = 25.0 * amplitude * _swings(_hold(u), 3)
    return {
        "RightArm": _toward(raised, "RightArm", (-50.0, 0.0, 20.0)),
        "RightForeArm": _toward(raised, "RightForeArm", (-40.0, 0.0, 0.0)) + _about(swing, z=1.0),
        "RightHand": _about(swing, z=0.4),
    }


def _point(u: np.ndarray, amplitude: float) -> Pose:
    reach = _envelope(u)
    beat = 6.0 * amplitude * _bumps(_hold(u), 2)  # two small downward beats of emphasis
    pose = {
        "RightArm": _toward(reach, "RightArm", (12.0, 0.0, 80.0)) + _about(beat, z=1.0),
        "RightForeArm": _toward(reach, "RightForeArm", (0.0, 0.0, 0.0)),
        "RightHandThumb2": _about(reach, z=25.0),
    }
    for finger in ("Middle", "Ring", "Pinky"):  # curled; the index finger stays straight
        for segment, curl in ((1, 70.0), (2, 80.0), (3, 40.0)):
            pose[f"RightHand{finger}{segment}"] = _about(reach, z=curl)
    return pose


def _nod(u: np.ndarray, amplitude: float) -> Pose:
    dip = 20.0 * amplitude * _bumps(u, 2)
    return {"Neck1": _about(dip, x=0.5), "Head": _about(dip, x=1.0)}


def _clap(u: np.ndarray, amplitude: float) -> Pose:
    lifted = _envelope(u)
    together = _bumps(_hold(u), 3)  # three claps
    apart_turn = 10.0 * (1.0 - amplitude)  # inward turn of the upper arm between claps (bigger: wider)
    lift = 25.0 * amplitude  # forward swing of the upper arm
    return _both_sides(
        {
            "RightArm": _toward(lifted, "RightArm", (78.0, apart_turn, lift))
            + _about(together, x=35.0 - apart_turn),
            "RightForeArm": _toward(lifted, "RightForeArm", (0.0, 0.0, 100.0)),
            "RightHand": _about(lifted, z=-35.0),
        }
    )


def _shrug(u: np.ndarray, amplitude: float) -> Pose:
    up = _envelope(u, ramp=0.3)
    raise_deg = 15.0 * amplitude
    pose = _both_sides(
        {
            "RightShoulder": _about(up, z=-raise_deg),
            # The upper arm keeps hanging (it undoes the shoulder's raise) and turns outwards, the elbow
            # bends: the forearms open out to the sides.
            "RightArm": _toward(up, "RightArm", (78.0 + raise_deg, -60.0, 10.0)),
            "RightForeArm": _toward(up, "RightForeArm", (0.0, 0.0, 85.0)),
            "RightHand": _about(up, x=-40.0),
        }
    )
    pose["Head"] = _about(up, z=8.0 * amplitude, x=-4.0)
    return pose


def _stretch(u: np.ndarray, amplitude: float) -> Pose:
    up = _envelope(u, ramp=0.3)
    arch = amplitude * up
    pose = _both_sides(
        {
            "RightArm": _toward(up, "RightArm", (-75.0, 0.0, 10.0)),
            "RightForeArm": _toward(up, "RightForeArm", (0.0, 0.0, 5.0)),
        }
    )
    pose.update(Spine1=_about(arch, x=-5.0), Spine2=_about(arch, x=-4.0), Head=_about(arch, x=-12.0))
    return pose


def _bow(u: np.ndarray, amplitude: float) -> Pose:
    down = _envelope(u, ramp=0.35)
    bend = 10.0 * amplitude * down  # per spine joint; about 35 degrees in all at amplitude 1
    pose = {
        "Spine": _about(bend, x=1.0),
        "Spine1": _about(bend, x=1.0),
        "Spine2": _about(bend, x=1.0),
        "Spine3": _about(bend, x=0.5),
        "Neck": _about(bend, x=0.5),
        "Head": _about(bend, x=0.8),
        "RightArm": _about(bend, y=3.5),  # the arms keep hanging down instead of following the chest
    }
    return _both_sides(pose)


GESTURES: dict[str, Gesture] = {
    g.word: g
    for g in (
        Gesture("wave", "right hand raised above the head, waving side to side three times", 1.6, _wave),
        Gesture("point", "right arm straight forward at shoulder height, index finger out", 1.4, _point),
        Gesture("nod", "the head nods twice; arms stay down", 1.4, _nod),
        Gesture("clap", "both forearms up in front, the hands meet three times", 1.6, _clap),
        Gesture("shrug", "shoulders up, elbows bent, forearms open out to the sides", 1.4, _shrug),
        Gesture("stretch", "both arms straight up overhead, the back arched a little", 1.6, _stretch),
        Gesture("bow", "the torso bends forward about 35 degrees and comes back up", 1.5, _bow),
    )
}

# Idle motion: (joint, axis, amplitude in degrees, frequency range in Hz), each a sum of two sinusoids.
_IDLE = (
    ("Spine1", "X", 0.8, (0.2, 0.3)),  # breathing
    ("Spine2", "X", 0.6, (0.2, 0.3)),
    ("Hips", "Y", 2.0, (0.05, 0.12)),  # sway
    ("Hips", "Z", 1.0, (0.05, 0.12)),
    ("Neck", "Y", 2.5, (0.08, 0.2)),
    ("Head", "X", 1.5, (0.1, 0.25)),
    ("RightArm", "Z", 2.0, (0.1, 0.25)),
    ("LeftArm", "Z", 2.0, (0.1, 0.25)),
    ("RightForeArm", "Y", 3.0, (0.1, 0.25)),
    ("LeftForeArm", "Y", 3.0, (0.1, 0.25)),
)
_ROOT_SWAY = ((1.0, (0.05, 0.12)), (0.3, (0.2, 0.3)), (0.8, (0.05, 0.12)))  # x, y, z: cm, Hz
_AXIS_COLUMN = {"Z": 0, "X": 1, "Y": 2}  # columns of a (Z, X, Y) triple


# -------------------------------------------------------------------------------------------- recordings
@dataclasses.dataclass(frozen=True)
class _Speaker:
    id: int
    name: str
    amplitude: float
    speed: float
    rest: dict[str, np.ndarray]  # this speaker's rest posture (REST_POSE varied): joint -> (Z, X, Y)


@dataclasses.dataclass(frozen=True)
class _Recording:
    euler_degrees: np.ndarray  # [T, R, 3], R = the skeleton's rotating joints
    root_translation: np.ndarray  # [T, 3]
    words: list[tuple[float, float, str]]  # (start_s, end_s, word)
    duration_s: float


def _speaker(index: int, seed: int) -> _Speaker:
    rng = np.random.default_rng([seed, 1, index])
    name = SPEAKER_NAMES[index % len(SPEAKER_NAMES)]
    if index >= len(SPEAKER_NAMES):
        name += str(index // len(SPEAKER_NAMES) + 1)
    abduction, elbow, head = rng.uniform(-3.0, 3.0), rng.uniform(-5.0, 5.0), rng.uniform(-2.0, 2.0)
    right_arm = np.add(REST_POSE["RightArm"], (-abduction, 0.0, 0.0))
    right_forearm = np.add(REST_POSE["RightForeArm"], (0.0, 0.0, elbow))
    rest = {joint: np.asarray(angles) for joint, angles in REST_POSE.items()}
    rest.update(
        RightArm=right_arm,
        LeftArm=mirror(right_arm),
        RightForeArm=right_forearm,
        LeftForeArm=mirror(right_forearm),
        Head=np.array([0.0, head, 0.0]),
    )
    return _Speaker(
        id=index + 1,
        name=name,
        amplitude=float(rng.uniform(*AMPLITUDE_RANGE)),
        speed=float(rng.uniform(*SPEED_RANGE)),
        rest=rest,
    )


def _idle(num_frames: int, fps: int, rng: np.random.Generator, slots: dict[str, int], num_slots: int):
    """Idle motion: Euler offsets [T, R, 3] and root translation offsets [T, 3] (cm)."""
    t = np.arange(num_frames) / fps

    def wobble(frequencies: tuple[float, float]) -> np.ndarray:
        f = rng.uniform(*frequencies, size=2)
        phase = rng.uniform(0.0, 2.0 * np.pi, size=2)
        return 0.6 * np.sin(2.0 * np.pi * f[0] * t + phase[0]) + 0.4 * np.sin(
            2.0 * np.pi * f[1] * t + phase[1]
        )

    euler = np.zeros((num_frames, num_slots, 3))
    for joint, axis, amplitude, frequencies in _IDLE:
        euler[:, slots[joint], _AXIS_COLUMN[axis]] += amplitude * wobble(frequencies)
    for leg in ("RightUpLeg", "LeftUpLeg"):  # legs undo the hips' sway, so the feet stay about put
        euler[:, slots[leg]] -= euler[:, slots["Hips"]]
    root = np.stack([amplitude * wobble(frequencies) for amplitude, frequencies in _ROOT_SWAY], axis=1)
    return euler, root


def _recording(
    speaker: _Speaker,
    words: list[str],
    fps: int,
    rng: np.random.Generator,
    slots: dict[str, int],
    num_slots: int,
) -> _Recording:
    """One recording: rest pause, then per gesture word a sentence and a rest pause."""

    def frames(seconds: float) -> int:
        return round(seconds * fps)

    spoken: list[tuple[int, int, str]] = []  # frames
    gestures: list[tuple[int, int, Gesture, float]] = []  # start frame, frames, gesture, amplitude
    cursor = frames(rng.uniform(*PAUSE_S))
    for word in words:
        gesture = GESTURES[word]
        sentence_start = cursor
        if rng.random() < 0.5:
            length = frames(rng.uniform(0.2, 0.35))
            spoken.append((cursor, cursor + length, str(rng.choice(WORDS_BEFORE))))
            cursor += length + frames(rng.uniform(0.03, 0.15))
        length = max(
            frames(gesture.duration_s / speaker.speed * rng.uniform(0.92, 1.08)), frames(MIN_SENTENCE_S)
        )
        spoken.append((cursor, cursor + length, word))
        gestures.append((cursor, length, gesture, speaker.amplitude * rng.uniform(0.95, 1.05)))
        cursor += length
        gap, length, after = frames(rng.uniform(0.03, 0.15)), frames(rng.uniform(0.2, 0.35)), rng.random()
        if after < 0.35 and cursor + gap + length - sentence_start <= MAX_SENTENCE_S * fps:
            spoken.append((cursor + gap, cursor + gap + length, str(rng.choice(WORDS_AFTER))))
            cursor += gap + length
        cursor += frames(rng.uniform(*PAUSE_S))
    num_frames = cursor

    euler, root = _idle(num_frames, fps, rng, slots, num_slots)
    for joint, angles in speaker.rest.items():
        euler[:, slots[joint]] += angles
    for start, length, gesture, amplitude in gestures:
        u = np.arange(length + 1) / length
        for joint, offsets in gesture.pose(u, amplitude).items():
            euler[start : start + length + 1, slots[joint]] += offsets
    root[:, 1] += ROOT_HEIGHT_CM
    return _Recording(
        euler_degrees=euler,
        root_translation=root,
        words=[(start / fps, end / fps, text) for start, end, text in spoken],
        duration_s=num_frames / fps,
    )


# ---------------------------------------------------------------------------------------------- dataset
@dataclasses.dataclass(frozen=True)
class DemoSummary:
    """What `write_demo_dataset` wrote (or found already written: created False)."""

    root: Path
    created: bool
    files: tuple[str, ...]  # relative to root, '/'-separated, manifest excluded
    num_recordings: int
    num_sentences: int
    num_frames: int
    duration_s: float
    gesture_counts: dict[str, int]


def write_demo_dataset(
    root: str | os.PathLike,
    num_speakers: int = 4,
    recordings_per_speaker: int = 3,
    sentences_per_recording: int = 12,
    fps: int = 120,
    seed: int = 0,
) -> DemoSummary:
    """Write the synthetic BEAT-format dataset under `root` (see the module docstring) and summarise it.

    `root` must be missing, empty, or a previous output of this function with the same options (then
    nothing is written: created False). Anything else raises FileExistsError and touches nothing. The
    files are written to a temporary sibling folder and then moved into place (see `_publish`), with a
    manifest `synthetic.json` (options, summary, SHA-256 of every file) that identifies them. A failed or
    interrupted write (a full disk: an OSError naming the file; Ctrl-C) removes the temporary folder, and
    one left by a killed process of this host is removed when `root` is next written.
    The gesture words are dealt in shuffled rounds of all of GESTURES, so their counts differ by at most 1.
    fps: frames per second of the BVH files (>= 20; BEAT's is 120).
    """
    options = {
        "generator": "motion_ddpm_jax.data.synthetic",
        "version": GENERATOR_VERSION,
        "num_speakers": num_speakers,
        "recordings_per_speaker": recordings_per_speaker,
        "sentences_per_recording": sentences_per_recording,
        "fps": fps,
        "seed": seed,
    }
    least = {"num_speakers": 1, "recordings_per_speaker": 1, "sentences_per_recording": 1, "fps": 20}
    for key, minimum in least.items():
        value = options[key]
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
            raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")
    if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    root = Path(os.path.abspath(root))  # '.' or 'out/' have a name and a parent to stage beside
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        return _previous_output(root, options)

    skeleton = beat_skeleton()
    rotating = skeleton.rotation_joints
    slots = {skeleton.names[joint]: slot for slot, joint in enumerate(rotating)}
    total = num_speakers * recordings_per_speaker * sentences_per_recording
    dealt = _dealt_words(seed, total)

    root.parent.mkdir(parents=True, exist_ok=True)
    # The staging folder, `.<name>.tmp-<host>-<pid>-<random>` beside root, is made by mkdir (not
    # tempfile.mkdtemp: its folder would be private to the user once renamed) and removed when this ends
    # without moving it into place (a full disk, Ctrl-C); one a killed process of this host left is removed
    # first. An OSError while writing names the file of root that failed.
    with staged_folder(root, "tmp") as staging:
        with writing(root, staging):
            files: dict[str, str] = {}
            num_frames, duration = 0, 0.0
            for s in range(num_speakers):
                speaker = _speaker(s, seed)
                (staging / str(speaker.id)).mkdir()
                for r in range(recordings_per_speaker):
                    first = (s * recordings_per_speaker + r) * sentences_per_recording
                    words = dealt[first : first + sentences_per_recording]
                    rng = np.random.default_rng([seed, 2, s, r])
                    recording = _recording(speaker, words, fps, rng, slots, len(rotating))
                    stem = f"{speaker.id}/{speaker.id}_{speaker.name}_0_{r + 1}_{r + 1}"
                    write_bvh(
                        staging / f"{stem}.bvh",
                        skeleton,
                        recording.euler_degrees,
                        recording.root_translation,
                        1.0 / fps,
                        order=EULER_ORDER,
                    )
                    write_textgrid(staging / f"{stem}.TextGrid", recording.words, 0.0, recording.duration_s)
                    for suffix in (".bvh", ".TextGrid"):
                        files[stem + suffix] = sha256_of(staging / (stem + suffix))
                    num_frames += recording.euler_degrees.shape[0]
                    duration += recording.duration_s
            counts = {word: dealt.count(word) for word in GESTURES}
            summary = {
                "num_recordings": num_speakers * recordings_per_speaker,
                "num_sentences": total,
                "num_frames": num_frames,
                "duration_s": round(duration, 6),
                "gesture_counts": counts,
            }
            manifest = {"options": options, "summary": summary, "files": files}
            (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
        try:
            _publish(staging, root)
        except OSError:  # something filled `root` meanwhile: the same output (no-op) or a refusal
            return _previous_output(root, options)
    return _summary(root, manifest, created=True)


def _publish(staging: Path, root: Path) -> None:
    """Move the finished output into place: a missing `root` by one rename (all files appear at once);
    an existing empty folder (perhaps someone's working directory) is filled, not replaced, one entry at
    a time with the manifest last, so an interrupted move leaves no manifest and is never taken for a
    complete output. OSError if anything is in the way."""
    if not root.exists():
        os.rename(staging, root)
        return
    entries = sorted(p for p in staging.iterdir() if p.name != MANIFEST_NAME) + [staging / MANIFEST_NAME]
    for entry in entries:
        target = root / entry.name
        if target.exists():
            raise FileExistsError(f"{target} appeared while the demo data was written")
        os.rename(entry, target)


def _dealt_words(seed: int, total: int) -> list[str]:
    """`total` gesture words in shuffled rounds of all of GESTURES."""
    order_rng = np.random.default_rng([seed, 0])
    rounds = -(-total // len(GESTURES))
    words = list(GESTURES)
    return [words[i] for _ in range(rounds) for i in order_rng.permutation(len(words))][:total]


def _summary(root: Path, manifest: dict, created: bool) -> DemoSummary:
    summary = manifest["summary"]
    return DemoSummary(
        root=root,
        created=created,
        files=tuple(sorted(manifest["files"])),
        num_recordings=summary["num_recordings"],
        num_sentences=summary["num_sentences"],
        num_frames=summary["num_frames"],
        duration_s=summary["duration_s"],
        gesture_counts=dict(summary["gesture_counts"]),
    )


def _previous_output(root: Path, options: dict) -> DemoSummary:
    """The summary of an identical earlier output in `root`, else FileExistsError saying what differs."""
    refuse = (
        f"write_demo_dataset never writes into a folder holding other files; pass a new or empty folder "
        f"(or delete {root} if it is an old demo output you no longer need)"
    )
    if not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder; {refuse}")
    manifest_path = root / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())
        recorded_options, files = manifest["options"], manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise FileExistsError(
            f"{root} is not empty and holds no readable {MANIFEST_NAME} of an earlier demo output; {refuse}"
        ) from None
    if recorded_options != options:
        changed = {
            key: (recorded_options.get(key), value)
            for key, value in options.items()
            if recorded_options.get(key) != value
        }
        raise FileExistsError(
            f"{root} holds demo data written with other options (recorded -> asked: {changed}); {refuse}"
        )
    present = {path.relative_to(root).as_posix() for path in root.rglob("*") if not path.is_dir()} - {
        MANIFEST_NAME
    }
    extra, missing = sorted(present - set(files)), sorted(set(files) - present)
    changed_files = sorted(name for name in set(files) & present if sha256_of(root / name) != files[name])
    if extra or missing or changed_files:
        raise FileExistsError(
            f"{root} holds demo data with the same options, but not as written: extra files {extra[:5]}, "
            f"missing {missing[:5]}, modified {changed_files[:5]}; {refuse}"
        )
    return _summary(root, manifest, created=False)


def main(argv: list[str] | None = None) -> DemoSummary:
    parser = argparse.ArgumentParser(
        prog="python -m motion_ddpm_jax.data.synthetic",
        description="Write the synthetic BEAT-format demo dataset (BVH + TextGrid per recording).",
    )
    parser.add_argument("out_dir", help="a new or empty folder (an identical earlier output is left as is)")
    parser.add_argument("--speakers", type=int, default=4)
    parser.add_argument("--recordings", type=int, default=3, help="recordings per speaker")
    parser.add_argument("--sentences", type=int, default=12, help="sentences (gestures) per recording")
    parser.add_argument("--fps", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        summary = write_demo_dataset(
            args.out_dir, args.speakers, args.recordings, args.sentences, args.fps, args.seed
        )
    except (FileExistsError, ValueError) as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    seconds = time.perf_counter() - start
    verb = "wrote" if summary.created else "found (unchanged)"
    print(
        f"{verb} {summary.root}: {summary.num_recordings} recordings, {summary.num_sentences} sentences, "
        f"{summary.num_frames} frames ({summary.duration_s:.1f} s of motion) in {seconds:.1f} s; "
        f"gestures {summary.gesture_counts}"
    )
    return summary


if __name__ == "__main__":
    main()
