"""Error types that the CLI turns into one-line messages and exit codes (DESIGN.md §3.9)."""

from __future__ import annotations

from pathlib import Path


class PrmfactoryError(Exception):
    """A failure the user should read as one line; exit code 1."""

    exit_code = 1


class UsageError(PrmfactoryError):
    """Bad input or usage (a malformed file, a conflicting flag); exit code 2."""

    exit_code = 2


class PromptTooLong(PrmfactoryError):
    """A prompt that leaves no room to generate in the model's context; a stage may skip that item."""


def rerun_command(stage: str, root: Path | str) -> str:
    """The command a message tells the user to run to (re)compute ``stage``'s outputs in the run at ``root``."""
    if stage == "mcts":
        return f"prmfactory mcts --input PROBLEMS --output {root}"
    return f"prmfactory {stage} --run {root}"
