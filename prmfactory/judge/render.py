"""Judge prompt templates: plain-text files with ``{problem}``, ``{numbered_steps}`` and ``{tagged_steps}``.

Placeholders are replaced literally (not with ``str.format``), so templates may contain braces
such as ``\\boxed{}``. Shipped templates live in ``prompts/``; users pass their own file.
"""

from __future__ import annotations

from pathlib import Path

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
DEFAULT_TEMPLATES = {"critic": PROMPTS_DIR / "critic.txt", "per_step": PROMPTS_DIR / "per_step.txt"}
SHIPPED_TEMPLATES = {path.stem: path for path in sorted(PROMPTS_DIR.glob("*.txt"))}
TOY_TEMPLATE = PROMPTS_DIR / "toy_critic.txt"


def numbered(steps: list[str]) -> str:
    return "\n".join(f"[{i}] {step}" for i, step in enumerate(steps))


def tagged(steps: list[str]) -> str:
    return "\n\n".join(f"<paragraph_{i}>\n{step}\n</paragraph_{i}>" for i, step in enumerate(steps))


def render(template: str, problem: str, steps: list[str]) -> str:
    """The judge prompt for one solution."""
    return (template.replace("{problem}", problem).replace("{numbered_steps}", numbered(steps))
            .replace("{tagged_steps}", tagged(steps)).rstrip("\n"))
