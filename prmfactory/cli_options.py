"""Option definitions shared by the CLI commands, declared once (DESIGN.md §3.9)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

InputOpt = Annotated[Path, typer.Option("--input", "-i", help="Problems as JSONL ({id?, problem, answer}, GSM8K or MATH shape).")]
FormatOpt = Annotated[str, typer.Option("--format", help="Input shape: auto, prmfactory, gsm8k or math.")]
OutputRunOpt = Annotated[Path, typer.Option("--output", "-o", help="Run folder to create or resume.")]
RunOpt = Annotated[Path, typer.Option("--run", help="Run folder to read and extend.")]
RunArg = Annotated[Path, typer.Argument(help="Run folder.", exists=True, file_okay=False)]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (flat, or a pipelines/*.yaml file).", exists=True, dir_okay=False)]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help="Process at most this many problems.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed (engine and search).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Discard this stage's outputs if its config changed, and rerun.")]
SkipInvalidOpt = Annotated[bool, typer.Option("--skip-invalid", help="Process valid lines; write bad ones to RUN/rejects.jsonl.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
