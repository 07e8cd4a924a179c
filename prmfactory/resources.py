"""Locations of the project's top-level data folders (schemas/, pipelines/, data_cards/).

In a source checkout or an editable install they sit beside the package; a built wheel
carries them inside the package as ``prmfactory/_resources/<name>`` (see pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The folder ``name`` (e.g. ``"schemas"``), wherever this installation keeps it."""
    for candidate in (_PACKAGE / "_resources" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"prmfactory resource folder {name!r} not found next to {_PACKAGE}")


# Model names every command accepts besides ids and paths: the committed toy models
# (prmfactory/toy/models, rebuilt by `prmfactory toy build --retrain`).
TOY_MODELS_DIR = _PACKAGE / "toy" / "models"
MODEL_ALIASES = {"toy": TOY_MODELS_DIR / "policy", "toy-judge": TOY_MODELS_DIR / "judge", "toy-base": TOY_MODELS_DIR / "base"}


def resolve_model(name: str) -> str:
    """Map a model alias (``toy``, ``toy-judge``, ``toy-base``) to its local folder; other names pass through."""
    path = MODEL_ALIASES.get(name)
    return str(path) if path is not None else name


def require_model(name: str) -> str:
    """``resolve_model``, refusing a local path (absolute, ``./``, ``../``, ``~``) that is not a model folder.

    Hub ids (``Qwen/Qwen2.5-Math-7B-Instruct``) pass through: the engine resolves them.
    """
    from prmfactory.errors import UsageError

    resolved = resolve_model(name)
    if resolved.startswith(("/", "./", "../", "~")):
        folder = Path(resolved).expanduser()
        if not folder.is_dir():
            raise UsageError(f"{resolved}: no such model folder")
        if not (folder / "config.json").is_file():
            raise UsageError(f"{resolved}: not a model folder (no config.json)")
    return resolved
