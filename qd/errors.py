"""The suite's expected failures: each message says what is wrong, where, and how to fix it.

``qd`` prints these without a traceback and exits non-zero; anything else is a bug and keeps its
traceback.
"""


class QdError(Exception):
    """Base class of failures the user can act on."""


class ConfigError(QdError, ValueError):
    """A config the suite refuses; the message lists every problem with its key."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        super().__init__(f"{source} is invalid:\n" + "\n".join(f"  - {p}" for p in problems))


class DataMissing(QdError, FileNotFoundError):
    """Raw data absent or corrupt; the message says which file, where, and how to get it."""


class NonFiniteLoss(QdError, RuntimeError):
    """The loss became NaN or infinite; the message names run, epoch and step."""


class MissingRun(QdError, FileNotFoundError):
    """A run this step reads (a teacher, a source student, a planned run) has not finished."""
