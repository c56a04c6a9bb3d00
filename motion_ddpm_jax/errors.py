"""The one base class of errors whose message is complete for a user, and of the project's warnings.

Every error raised because of something a user gave (a file, a config field, a flag, a workdir) derives
from `UserError` and names what was wrong and what was expected. `launch.py` prints such an error as one
paragraph and exits non-zero; anything else is a bug and keeps its traceback.
`EvaluationError` is here, not in `evaluate`, because all the modules of an evaluation raise it (`fgd`,
`lineage`, `evaluate`).
"""


class UserError(ValueError):
    """Bad input from the user (file, config field, flag, workdir), described completely by its message."""


class ProjectWarning(UserWarning):
    """A warning of this project about what a user gave (a folder read at another frame rate or unit, a
    skeleton's oddity, a glyph no font has), its message complete: `launch.py` says it as a `warning:` line
    of the run's output, where other libraries' warnings keep Python's display."""


class EvaluationError(UserError):
    """An evaluation input (checkpoint, dataset, autoencoder folder, config.eval field) is unusable."""
