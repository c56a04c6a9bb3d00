"""The benchmarks' JSON records (`--json FILE`), written so that nothing a user wrote is overwritten.

A benchmark checks its --json file when it parses its arguments (`check_new_json`: an existing file is
refused before any time is spent) and then rewrites it as its results come in (`write_json`); it never
writes over a file it did not write itself in this process.

Standard library only: the benchmarks that do not load jax (bench_bvh.py, bench_pipeline.py) use it too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

_WRITTEN: set[Path] = set()  # the files this process wrote: it may rewrite them as results come in


def _exists_message(flag: str, path: Path) -> str:
    return (
        f"{flag} {path}: that file exists, and a benchmark never overwrites a file: give a new path "
        "(or move that file aside first)"
    )


def check_new_json(parser: argparse.ArgumentParser, path: Path | None, flag: str = "--json") -> None:
    """Stop with a usage error (exit 2) when `path` exists already: called at argument parsing, so no
    benchmark time is lost on a run whose record could not be written."""
    if path is not None and Path(path).resolve() not in _WRITTEN and Path(path).exists():
        parser.error(_exists_message(flag, path))


def write_json(path: Path | None, record: dict, quiet: bool = False, flag: str = "--json") -> None:
    """Write `record` to `path` (None: nothing) through a temporary file and a rename, so that a run killed
    while writing leaves the previous version whole (the benchmarks rewrite it as results come in).
    Refuses (SystemExit, naming `flag` and the file) a path that exists and was not written by this
    process: nothing a user wrote is overwritten."""
    if path is None:
        return
    path = Path(path)
    key = path.resolve()
    if key not in _WRITTEN and path.exists():
        raise SystemExit(_exists_message(flag, path))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record, indent=1, default=str) + "\n")
    partial.replace(path)
    _WRITTEN.add(key)
    if not quiet:
        print(f"wrote {path}", flush=True)
