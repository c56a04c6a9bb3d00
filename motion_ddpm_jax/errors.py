"""The one base class of errors whose message is complete for a user.

Every error raised because of something a user gave (a file, a config field, a flag, a workdir) derives
from `UserError` and names what was wrong and what was expected. `launch.py` prints such an error as one
paragraph and exits non-zero; anything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input from the user (file, config field, flag, workdir), described completely by its message."""
