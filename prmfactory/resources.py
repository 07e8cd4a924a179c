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
