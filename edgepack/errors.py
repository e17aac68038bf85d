"""The one error family users see. The CLI maps each class to an exit code and prints
its message as one line; anything else escaping is a bug (exit 4)."""

from __future__ import annotations


class EdgepackError(Exception):
    """Base of every error edgepack reports to a user."""

    exit_code = 4


class ConfigError(EdgepackError):
    """Bad input: a project, target, profile, model file or data hook is wrong (exit 2)."""

    exit_code = 2

    def __init__(self, message: str, *, problems: list[str] | None = None):
        self.problems = list(problems or [])
        super().__init__(message)


class ToolchainError(EdgepackError):
    """A converter, quantizer, runtime or device failed on valid input (exit 3)."""

    exit_code = 3

    def __init__(self, message: str, *, format: str | None = None, stage: str | None = None):
        self.format = format
        self.stage = stage
        super().__init__(message)


class BudgetError(EdgepackError):
    """Built, but a gate failed: accuracy, size or latency left the target's budget (exit 1)."""

    exit_code = 1


class VerificationError(EdgepackError):
    """A release failed verification: a bad or missing signature, a hash that does not
    match, a file the manifest does not list, an unsafe or corrupt archive, or an
    artifact that no longer computes its recorded outputs (exit 1)."""

    exit_code = 1

    def __init__(self, message: str, *, problems: list[str] | None = None):
        self.problems = list(problems or [])
        super().__init__(message)
