"""Error types that the CLI turns into one-line messages and exit codes (DESIGN.md §3.9)."""

from __future__ import annotations


class PrmfactoryError(Exception):
    """A failure the user should read as one line; exit code 1."""

    exit_code = 1


class UsageError(PrmfactoryError):
    """Bad input or usage (a malformed file, a conflicting flag); exit code 2."""

    exit_code = 2
