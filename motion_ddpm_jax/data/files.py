"""Small file helpers shared by the writers: never overwrite a user's file by accident."""

import os


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
