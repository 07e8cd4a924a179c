"""A newcomer's first hour: the README's offline commands, run as written, in the README's order.

Every fenced ``bash`` block is split into commands (``\\`` continuations joined) and every ``python``
block is run as a script, from the checkout's root, so relative paths (``runs/``, ``../shared/data``)
mean what they mean to a reader. A command fails the check when it exits non-zero, prints a Python
traceback, answers a README request with an HTTP error (``{"detail": ...}``: a 401 from a key the
snippets forgot), or prints more WARNING lines than ``--warning-budget``. ``prmfactory serve`` starts
in the background (its curl lines follow it) and stops at the end.

Skipped, each with its reason: what needs a GPU cluster, a model from the Hub, an object store, RL
frameworks' own launchers or placeholders (``...``); the SmolLM2 factory run and the real-text recipe
(about an hour each on two cores) unless ``--long``; ``make test`` (CI runs it).

Usage (a fresh clone beside ``shared/``, after ``make install``):
    .venv/bin/python benchmarks/first_hour.py [--long] [--warning-budget 10] [--json runs/first_hour.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPS = [  # (pattern in the command, why it cannot run offline on a laptop)
    (r"Qwen/|mistral|PATH/", "needs a model from the Hub"),
    (r"s3://|/shared/runs|HEAD_IP|ray start|--ray-address auto", "needs an object store or a Ray cluster"),
    (r"^vllm serve|pip install", "needs a GPU build of vLLM"),
    (r"openrlhf|verl\.trainer", "an RL framework's own launcher"),
    (r"\.\.\.", "a sketch with placeholders"),
    (r"^make test", "the test suite (CI runs it)"),
    (r"--repo-id (?!.*--dry-run)", "uploads to the Hugging Face Hub"),
]
WRITTEN = ("runs", "toy.jsonl", "toy-ray.jsonl", "toy-pb", "first_errors.jsonl")  # what the README's commands write
LONG = [r"pipelines/smollm2\.yaml", r"smollm2_problem_sets\.py", r"runs/smollm2\b",
        r"pipelines/real_text\.yaml", r"runs/real-text\b"]


@dataclass
class Result:
    line: int
    command: str
    status: str  # ran, failed, skipped
    seconds: float = 0.0
    warnings: int = 0
    why: str = ""
    tail: list[str] = field(default_factory=list)


def snippets(readme: Path) -> list[tuple[int, str, str]]:
    """(line, language, text) of each command of the README's bash blocks and each python block."""
    found, language, start, lines = [], None, 0, []
    for number, line in enumerate(readme.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            if language is None:
                language, start, lines = line[3:].strip(), number, []
                continue
            if language == "python":
                found.append((start + 1, "python", "\n".join(lines)))
            elif language == "bash":
                command, first = "", 0
                for offset, text in enumerate(lines, start + 1):
                    if not command and (not text.strip() or text.lstrip().startswith("#")):
                        continue
                    first = first or offset
                    command += text[:-1] + " " if text.endswith("\\") else text + "\n"
                    if not text.endswith("\\") and _complete(command):
                        found.append((first, "bash", command.strip()))
                        command, first = "", 0
            language = None
        elif language is not None:
            lines.append(line)
    return found


def _complete(command: str) -> bool:
    """Whether a command's quotes are closed (a quoted JSON body may span lines)."""
    try:
        shlex.split(command, comments=True)
    except ValueError:
        return False
    return True


def skip_reason(command: str, long: bool) -> str:
    code = "\n".join(line.split(" #")[0] for line in command.splitlines() if not line.lstrip().startswith("#"))
    for pattern, why in SKIPS:
        if re.search(pattern, code, re.MULTILINE):
            return why
    if not long and any(re.search(pattern, code) for pattern in LONG):
        return "the SmolLM2 factory run (about an hour on two cores): --long runs it"
    return ""


def failure(output: str, code: int, warnings: int, budget: int, is_request: bool) -> str:
    if code:
        return f"exit code {code}"
    if "Traceback (most recent call last)" in output:
        return "a Python traceback"
    if is_request and output.lstrip().startswith('{"detail"'):
        return f"an HTTP error: {output.strip()[:120]}"
    if warnings > budget:
        return f"{warnings} WARNING lines (budget {budget})"
    return ""


def wait_for(url: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"the README's server did not answer {url} in {seconds:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="also run the SmolLM2 factory run")
    parser.add_argument("--warning-budget", type=int, default=10, help="most WARNING lines one command may print")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    present = [name for name in WRITTEN if (ROOT / name).exists()]
    if present:  # the README's commands write there as written: a checkout's own runs would be overwritten
        raise SystemExit(f"{ROOT}: already holds {', '.join(present)}; run this in a fresh clone "
                         "(git clone THIS_CHECKOUT DIR && cd DIR && make install)")
    env = dict(os.environ, COLUMNS="100")
    results: list[Result] = []
    server = None
    try:
        for line, language, text in snippets(ROOT / "README.md"):
            why = skip_reason(text, args.long)
            result = Result(line, text if language == "bash" else f"python block at README.md:{line}", "skipped", why=why)
            results.append(result)
            if why:
                print(f"README.md:{line}: skipped ({why}): {text.splitlines()[0][:90]}", flush=True)
                continue
            print(f"README.md:{line}: {result.command[:110]}", flush=True)
            started = time.monotonic()
            if language == "bash" and re.search(r"prmfactory serve ", text):
                server = subprocess.Popen(["bash", "-c", text], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.STDOUT, start_new_session=True)
                port = re.search(r"--port (\d+)", text)
                wait_for(f"http://127.0.0.1:{port.group(1) if port else 8000}/health")
                result.status, result.seconds = "ran", round(time.monotonic() - started, 1)
                continue
            command = ["bash", "-c", text] if language == "bash" else [sys.executable, "-c", text]
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
            output = done.stdout + done.stderr
            result.seconds = round(time.monotonic() - started, 1)
            result.warnings = sum("WARNING" in line for line in output.splitlines())
            result.why = failure(output, done.returncode, result.warnings, args.warning_budget, text.startswith("curl"))
            result.status = "failed" if result.why else "ran"
            result.tail = output.strip().splitlines()[-5:] if result.why else []
            print(f"  {result.status} in {result.seconds} s, {result.warnings} WARNING lines"
                  + (f": {result.why}" if result.why else ""), flush=True)
            for tail in result.tail:
                print(f"    | {tail[:160]}")
    finally:
        if server is not None:
            os.killpg(server.pid, 15)
    failed = [r for r in results if r.status == "failed"]
    ran = [r for r in results if r.status == "ran"]
    print(f"{len(ran)} commands ran, {len(failed)} failed, {len(results) - len(ran) - len(failed)} skipped; "
          f"{sum(r.seconds for r in results) / 60:.1f} min")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
