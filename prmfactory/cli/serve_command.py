"""``prmfactory serve``: the flags of :class:`prmfactory.serve.launch.ServeConfig`, then :func:`~prmfactory.serve.launch.serve`."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import typer

from prmfactory.cli import options as opt
from prmfactory.cli.typer_app import app, command, handled


@command(app, rich_help_panel=opt.HELP_PANELS["serve"])
@handled
def serve(
    prm: opt.PrmRequiredOpt,
    host: Annotated[str, typer.Option(help="Interface to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[Optional[str], typer.Option(envvar="PRMFACTORY_API_KEY", show_envvar=True, help="Require `Authorization: Bearer KEY` on every request.")] = None,
    aggregate: Annotated[opt.Aggregation, typer.Option(help="Reward of /get_reward from the step scores.")] = "min",
    backend: opt.BackendOpt = "transformers",
    prm_format: opt.PrmFormatOpt = "auto",
    max_batch: Annotated[int, typer.Option(help="Most solutions scored in one model call.")] = 64,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body (MB); larger ones get 413.")] = 4.0,
    max_items: Annotated[int, typer.Option(help="Most solutions (or queries) in one request; more get 413.")] = 1024,
    max_steps: Annotated[int, typer.Option(help="Most steps in one solution; more get 422.")] = 512,
    threshold: Annotated[Optional[float], typer.Option(help="A step scored below it is the first "
                                                   "error (first_error; reported by /v1/models). Default: the PRM's "
                                                   "calibrated threshold (eval processbench --threshold auto), else 0.5.")] = None,
    policy_template: Annotated[Optional[str], typer.Option(help="OpenRLHF /get_reward: the policy's tokenizer (name or "
                                                               "path) whose chat template wraps OpenRLHF's prompts; it "
                                                               "is stripped so the PRM sees the raw problem.")] = None,
    question_from: Annotated[Literal["prompt", "label"], typer.Option(help="OpenRLHF /get_reward: the problem is the `prompt` (template "
                                                    "stripped) or the `label` (a raw-question label column).")] = "prompt",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No request log (one line per request otherwise).")] = False,
) -> None:
    """Serve a PRM over HTTP for online RL: /v1/prm/score, OpenRLHF's /get_reward, /v1/models, /health."""
    flags = dict(locals())  # the flags, before anything else is named here
    from prmfactory.serve.launch import ServeConfig
    from prmfactory.serve.launch import serve as run_server

    run_server(ServeConfig.from_flags(**flags))
