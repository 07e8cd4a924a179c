"""The model card a trained PRM carries (``README.md``), rendered from ``data_cards/prm_model_card.md.j2``."""

from __future__ import annotations

from pathlib import Path


def write_model_card(folder: Path, meta) -> Path:
    """Render the card from the PRM's metadata (base, lineage, hyperparameters, training, evals)."""
    import jinja2

    from prmfactory.resources import resource_dir
    from prmfactory.fileio import atomic_write_text

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(resource_dir("data_cards")),
                                     undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    path = Path(folder) / "README.md"
    atomic_write_text(path, environment.get_template("prm_model_card.md.j2").render(meta=meta))
    return path
