"""Small file helpers shared by the writers: never overwrite a user's file by accident."""

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_text_file(path: str | os.PathLike, text: str, overwrite: bool) -> str:
    """Create `path` holding `text`; FileExistsError if it exists, unless `overwrite` (atomic replace)."""
    path = os.fspath(path)
    if overwrite:
        temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
        try:
            with open(temporary, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        return path
    try:
        handle = open(path, "x", encoding="utf-8", newline="\n")
    except FileExistsError:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it") from None
    try:
        with handle:
            handle.write(text)
    except BaseException:
        os.remove(path)  # the file we just created, never a user's
        raise
    return path


def save_json_once(
    path: str | os.PathLike,
    payload: Any,
    holds_it: Callable[[Path], bool],
    what: str,
    overwrite: bool = False,
) -> Path:
    """Write `payload` as JSON to `path` (atomically). An existing file for which `holds_it(path)` is True
    is left as it is; any other existing file raises FileExistsError unless `overwrite`."""
    path = Path(path)
    if path.exists() and not overwrite:
        try:
            same = holds_it(path)
        except (ValueError, OSError):
            same = False
        if same:
            return path
        raise FileExistsError(f"{path} exists and does not hold this {what}; pass overwrite=True to replace")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float as None and numpy scalars as Python numbers, for
    `json.dumps(..., allow_nan=False)`: JSON has no NaN or Infinity (Python writes them as tokens that
    strict readers, jq or JavaScript, refuse), so a diverged number is written as null."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / jax scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
