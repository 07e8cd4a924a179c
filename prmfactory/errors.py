"""Error types that the CLI turns into one-line messages and exit codes (DESIGN.md §3.9)."""

from __future__ import annotations


class PrmfactoryError(Exception):
    """A failure the user should read as one line; exit code 1."""

    exit_code = 1


class UsageError(PrmfactoryError):
    """Bad input or usage (a malformed file, a conflicting flag); exit code 2."""

    exit_code = 2


class PromptTooLong(PrmfactoryError):
    """A prompt that leaves no room to generate in the model's context; a stage may skip that item."""
