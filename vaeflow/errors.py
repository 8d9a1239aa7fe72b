"""Errors that reach the user as one line: what is wrong and what to do.

Everything the user can cause (a bad config value, a missing or malformed data file, a
checkpoint that does not fit) raises a subclass of :class:`VaeflowError`. The command
shims print its message on one line and exit non-zero; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

__all__ = ["VaeflowError", "ConfigError", "DataError", "CheckpointError", "TrainingError"]


class VaeflowError(Exception):
    """Base class of the errors whose message is meant for the user."""

    exit_code = 2


class ConfigError(VaeflowError):
    """A config value that cannot work (wrong family option, impossible size, ...)."""


class DataError(VaeflowError):
    """A dataset file that is missing or malformed."""


class CheckpointError(VaeflowError):
    """A checkpoint that is missing, corrupt, hostile or from another model."""


class TrainingError(VaeflowError):
    """Training cannot go on (for instance, too many non-finite steps in a row)."""

    exit_code = 3
