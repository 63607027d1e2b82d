"""Our exception types. Commands raise these; ``commands.guard`` renders them in one place.

Each type carries its exit code (README, "Commands": exit codes):
1 the run failed, 2 bad usage or bad input, 130 interrupted after a checkpoint was saved.
"""

from __future__ import annotations


class OhloraError(Exception):
    """A failure we understand. ``str(exc)`` is the message shown to the user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class BadInputError(OhloraError):
    """Bad usage or bad input: the user can fix it by changing what they passed us."""

    exit_code = 2


class RecipeError(BadInputError):
    """The recipe file or an override is malformed or invalid."""


class DataError(BadInputError):
    """A data file (CSV, JSONL, image) is missing or malformed."""


class CheckpointError(BadInputError):
    """A checkpoint is missing, corrupt or does not fit the model."""


class RunFailed(OhloraError):
    """The run itself failed (not the user's input)."""


class RankFailed(RunFailed):
    """A process of a distributed run failed or was killed (torchrun's exit code)."""


class PreflightFailed(OhloraError):
    """The doctor's preflight found a failure and stopped the launch."""

    def __init__(self, message: str, *, bad_input: bool = False, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.exit_code = 2 if bad_input else 1


class Interrupted(OhloraError):
    """Ctrl-C or SIGTERM; raised after the checkpoint was saved."""

    exit_code = 130
