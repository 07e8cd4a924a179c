"""Writing an evaluation's results: JSON, a markdown page and a PNG, in one place for every evaluator."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator, Mapping


def write_json_and_markdown(output: Path, stem: str, result: Mapping[str, Any], markdown: str) -> None:
    """``OUTPUT/<stem>.json`` and ``OUTPUT/<stem>.md``, each written atomically."""
    from prmfactory.fileio import atomic_write_text

    atomic_write_text(output / f"{stem}.json", json.dumps(result, indent=1))
    atomic_write_text(output / f"{stem}.md", markdown)


@contextlib.contextmanager
def figure(path: Path, size: tuple[float, float]) -> Iterator[Any]:
    """An axis to draw on; the figure is laid out, saved to ``path`` (PNG, 120 dpi) and closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axis = plt.subplots(figsize=size)
    try:
        yield axis
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
