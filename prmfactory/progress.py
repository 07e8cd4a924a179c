"""Rich progress bars for stage loops: counts, rate and ETA; silent with ``--quiet``."""

from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

console = Console(stderr=True)


class StageProgress:
    """One bar per stage loop; ``advance`` moves it and updates the free-text counters."""

    def __init__(self, progress: Progress | None, task: TaskID | None):
        self._progress, self._task = progress, task

    def advance(self, step: int = 1, **counters: object) -> None:
        if self._progress is not None and self._task is not None:
            info = "  ".join(f"{k}={v}" for k, v in counters.items())
            self._progress.update(self._task, advance=step, info=info)


@contextlib.contextmanager
def stage_progress(description: str, total: int | None, *, quiet: bool = False) -> Iterator[StageProgress]:
    """A progress bar with ``done/total``, elapsed time and ETA, on stderr."""
    if quiet:
        yield StageProgress(None, None)
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, info="")
        yield StageProgress(progress, task)
