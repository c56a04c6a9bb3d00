"""What software made a run: package versions, the source's git commit, the device, the command line.

train writes `software()` and `command_line()` into <workdir>/run.json and into every checkpoint's metadata;
sampling's index.json and eval's metrics JSON carry `software()` too, so a file says later what produced it.

A run resumes to the bit on the same software and hardware only: XLA chooses its fusions, and with them the
order of each float32 rounding, by its version and the device, so a resume under another jax/jaxlib or on
another device kind may differ in the last bits from an uninterrupted run. `changed_software` is the line
train logs when it does.

Nothing here initialises a JAX backend: the device is the caller's (`software(device)`), read where the
caller has devices already.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

# Distributions whose versions decide what a run computes, under their registry names.
PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "numpy",
    "ml_collections",
    "motion_ddpm_jax",
)
# The folder that holds this package: a checkout's root when it runs from one. Only its own .git counts:
# an installed copy lies in site-packages, often under a project's .venv inside some other checkout, whose
# commit is not this code's.
SOURCE = Path(__file__).resolve().parents[1]
# What may change the bits of a resumed run (`changed_software`); the rest is recorded, not compared.
COMPARED = ("jax", "jaxlib", "device_kind", "xla_flags")
GIT_TIMEOUT_S = 2.0  # `git status` on a tree of this size takes milliseconds; a stuck one is not waited for


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """{name: installed version} (importlib.metadata); None for a distribution that is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _is_commit(text: str) -> bool:
    """A full object name: 40 hex digits (SHA-1) or 64 (SHA-256 repositories)."""
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


def _git_dir(root: Path) -> Path | None:
    """root/.git, or where a `.git` file points (`gitdir: <path>`: a worktree or a submodule); None if
    root is no checkout's root."""
    dot = root / ".git"
    if dot.is_dir():
        return dot
    if dot.is_file():
        text = dot.read_text(encoding="utf-8").strip()
        if text.startswith("gitdir:"):
            return root / text.removeprefix("gitdir:").strip()  # an absolute path replaces root
    return None


# Variables of the user's environment that would point git at another repository, index or tree than
# root's (they override -C).
_GIT_PLACES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY")


def _git(root: Path, *args: str) -> str | None:
    """`git ARGS`'s output in root; None where git is missing, fails or takes longer than GIT_TIMEOUT_S.
    --no-optional-locks: `git status` would otherwise refresh the index under its lock, which a git
    command of the user's at the same moment would find taken."""
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(root), *args],
            env={k: v for k, v in os.environ.items() if k not in _GIT_PLACES},
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_commit(root: Path = SOURCE) -> str | None:
    """The commit checked out at `root` (a checkout's root), read from its .git files without running git:
    HEAD, then the branch it names as a loose ref or in packed-refs (in a worktree, those of the main
    .git, its `commondir`). None where root is no checkout, the branch has no commit yet, or the files
    cannot be read; git itself only for the reftable format, whose refs are binary."""
    try:
        git_dir = _git_dir(root)
        if git_dir is None:
            return None
        head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
        if _is_commit(head):  # a detached HEAD
            return head
        if not head.startswith("ref: "):
            return None
        ref = head.removeprefix("ref: ").strip()
        common = git_dir
        if (git_dir / "commondir").is_file():
            common = git_dir / (git_dir / "commondir").read_text(encoding="utf-8").strip()
        if (common / "reftable").is_dir():
            found = _git(root, "rev-parse", "--verify", "--quiet", "HEAD")
            return found.strip() if found and _is_commit(found.strip()) else None
        for folder in dict.fromkeys((git_dir, common)):
            if (folder / ref).is_file():
                loose = (folder / ref).read_text(encoding="utf-8").strip()
                return loose if _is_commit(loose) else None
        if (common / "packed-refs").is_file():
            for line in (common / "packed-refs").read_text(encoding="utf-8").splitlines():
                name, _, rest = line.partition(" ")
                if rest == ref and _is_commit(name):
                    return name
        return None
    except (OSError, UnicodeDecodeError):
        return None


def git_dirty(root: Path = SOURCE) -> bool | None:
    """Whether the checkout at `root` has uncommitted changes (`git status --porcelain` lists anything: a
    modified or untracked file that .gitignore does not cover); None where root is no checkout or git
    does not answer within GIT_TIMEOUT_S."""
    try:
        if _git_dir(root) is None:
            return None
    except (OSError, UnicodeDecodeError):
        return None
    listed = _git(root, "status", "--porcelain", "--ignore-submodules")
    return None if listed is None else bool(listed.strip())


def software(device: Any = None, source: Path = SOURCE) -> dict[str, Any]:
    """The software, and the device where given, that this process computes with:
    {"python", one entry per PACKAGES name (version or None), "git_commit", "git_dirty" (of `source`, a
    checkout's root, or None), "backend" (the device's platform: "cpu", "gpu", "tpu"), "device_kind",
    "xla_flags" (the XLA_FLAGS environment variable, "" where unset)}.
    `device` is a jax.Device the caller has (jax.local_devices()[0]); without one, backend and device_kind
    are None (reading them here would initialise a backend)."""
    return {
        "python": platform.python_version(),
        **package_versions(),
        "git_commit": git_commit(source),
        "git_dirty": git_dirty(source),
        "backend": None if device is None else str(device.platform),
        "device_kind": None if device is None else str(device.device_kind),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),  # XLA's options change its roundings too
    }


def command_line(argv: Sequence[str] | None = None) -> str:
    """`argv` (default sys.argv) as one line a POSIX shell splits back into the same words."""
    return shlex.join(sys.argv if argv is None else argv)


def changed_software(saved: Any, current: dict[str, Any], where: str = "the checkpoint") -> str | None:
    """The line a resume logs where `saved`, the software `where` recorded (None: written before this
    record existed, which says nothing), and `current` differ in jax, jaxlib or the device kind; None
    where they agree. A field either side does not know (None) is not compared."""
    if not isinstance(saved, dict):
        return None
    changes = [
        f"{key} {saved[key] or '(none)'} -> {current[key] or '(none)'}"
        for key in COMPARED
        if saved.get(key) is not None and current.get(key) is not None and saved[key] != current[key]
    ]
    if not changes:
        return None
    return (
        f"the software changed since {where} was saved: {', '.join(changes)}; each step computes what it "
        "computed before, but its roundings may differ, so the run may differ in the last bits from an "
        "uninterrupted one (XLA's fusions, and so its roundings, follow its version, options and device)"
    )
