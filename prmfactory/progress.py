"""Rich progress bars for stage loops: counts, rate and ETA; silent with ``--quiet``."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
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


class LineProgress(StageProgress):
    """Progress as a plain line every ``every_s`` seconds and at the end, when stderr is a file or a pipe
    (a job log), where a live bar would show nothing until the loop ends."""

    def __init__(self, description: str, total: int | None, every_s: float = 30.0):
        super().__init__(None, None)
        self.description, self.total, self.every_s = description, total, every_s
        self.done, self.info = 0, ""
        self.started = self.printed = time.monotonic()

    def advance(self, step: int = 1, **counters: object) -> None:
        self.done += step
        self.info = "  ".join(f"{k}={v}" for k, v in counters.items())
        if time.monotonic() - self.printed >= self.every_s:
            self.print()

    def print(self) -> None:
        self.printed = time.monotonic()
        elapsed = self.printed - self.started
        if self.total:
            eta = elapsed / self.done * (self.total - self.done) if self.done else None
            where = (f"{self.done}/{self.total} ({self.done / self.total:.0%}), {elapsed:.0f} s"
                     + (f", eta {eta:.0f} s" if eta is not None and self.done < self.total else ""))
        else:
            where = f"{self.done} done, {elapsed:.0f} s"
        console.print(f"{self.description}: {where}" + (f"  {self.info}" if self.info else ""), highlight=False,
                      soft_wrap=True)


@contextlib.contextmanager
def stage_progress(description: str, total: int | None, *, quiet: bool = False) -> Iterator[StageProgress]:
    """A progress bar with ``done/total``, elapsed time and ETA, on stderr (a line every 30 s when stderr is not
    a terminal)."""
    if quiet:
        yield StageProgress(None, None)
        return
    if not console.is_terminal:
        lines = LineProgress(description, total)
        yield lines
        lines.print()
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, info="")
        yield StageProgress(progress, task)


# What the libraries under prmfactory print that tells our user nothing they can act on, per engine start or
# per weight: vLLM's CPU notices (Triton, tcmalloc, eager mode; one "Attempted to load weight ... float32
# into bfloat16" per weight when a float32 checkpoint runs in bfloat16), torch's C++ NUMA notice, library
# FutureWarnings and DeprecationWarnings, multiprocessing's leaked-shared-memory note at exit, and the
# per-load progress bars of transformers and huggingface_hub. Set in the environment, so the engine's own
# processes (vLLM's EngineCore and workers) inherit it. Errors still show.
QUIET_ENVIRONMENT = {"VLLM_LOGGING_LEVEL": "ERROR", "TORCH_CPP_LOG_LEVEL": "ERROR", "TRANSFORMERS_VERBOSITY": "error",
                     "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                     "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning,"
                                       "ignore:resource_tracker:UserWarning"}


def quiet_third_party() -> None:
    """Keep third-party notices out of the terminal (``prmfactory --verbose`` shows them); what a user has set
    in the environment wins."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
