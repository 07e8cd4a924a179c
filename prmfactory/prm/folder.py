"""The PRM folder format: ``prm.json`` (kind, step segmentation, max length, lineage, hyperparameters,
training summary, evaluations) beside the model, its tokenizer and the model card.

Written by train-prm, read by every scorer, extended by every evaluation; it has no model code,
so the trainer, the scorers and the evaluations all depend on it and not on each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator

from prmfactory.errors import UsageError
from prmfactory.prm.heads import check_head, load_head

META_FILE = "prm.json"
CARD_FILE = "README.md"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass
class PRMMeta:
    """What ``prm.json`` records about a trained PRM."""

    kind: Literal["discriminative", "generative"]
    head: Annotated[str, AfterValidator(check_head)] = "token"  # discriminative: a name in prmfactory.prm.heads.HEADS
    segmentation: str = "blank_line"
    max_length: int = 1024
    base: str = ""
    lineage: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    evals: dict[str, Any] = field(default_factory=dict)
    threshold: Optional[float] = None  # a step scored below it is the first error; set by `eval processbench --threshold auto`
    threshold_calibration: dict[str, Any] = field(default_factory=dict)  # where it was chosen: data, split, F1

    @classmethod
    def load(cls, path: Path) -> "PRMMeta":
        meta_path = Path(path) / META_FILE
        if not meta_path.is_file():
            raise UsageError(f"{path}: not a PRM folder (no {META_FILE}; train one with `prmfactory train-prm`)")
        try:
            data = json.loads(meta_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"{meta_path}: invalid PRM metadata: {exc}") from exc
        if not isinstance(data, dict):
            raise UsageError(f"{meta_path}: invalid PRM metadata: expected a JSON object, got {type(data).__name__}")
        from pydantic import TypeAdapter, ValidationError

        from prmfactory.config import format_validation_error

        try:
            return TypeAdapter(cls).validate_python(data)
        except ValidationError as exc:
            raise UsageError(format_validation_error(exc, f"{meta_path}: invalid PRM metadata")) from exc

    def save(self, path: Path) -> None:
        from dataclasses import asdict

        from prmfactory.fileio import atomic_write_text

        atomic_write_text(Path(path) / META_FILE, json.dumps(asdict(self), indent=1))


def write_model_card(folder: Path, meta: PRMMeta) -> Path:
    """Render the card (``README.md``) from the PRM's metadata, with ``data_cards/prm_model_card.md.j2``."""
    import jinja2

    from prmfactory.fileio import atomic_write_text
    from prmfactory.resources import resource_dir

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(resource_dir("data_cards")),
                                     undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    head = load_head(meta.head) if meta.kind == "discriminative" else None
    path = Path(folder) / CARD_FILE
    atomic_write_text(path, environment.get_template("prm_model_card.md.j2").render(
        meta=meta, head_card=getattr(head, "card", ""), head_backends=getattr(head, "backends", ())))
    return path


def require_model_files(path: Path, meta: PRMMeta) -> None:
    """A PRM folder must hold its model and what its head adds: a half-copied folder is one line,
    never a transformers stack or, worse, a head scored untrained."""
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        missing.append("the model's weights (model.safetensors)")
    if meta.kind == "discriminative":
        missing += [name for name in load_head(meta.head).files if not (path / name).is_file()]
    if missing:
        raise UsageError(f"{path}: a PRM folder without {', '.join(missing)}; copy the whole folder, or train it "
                         "again (`prmfactory train-prm ... --force`)")


def record_eval(path: Path, name: str, numbers: dict[str, Any]) -> None:
    """Add an evaluation's headline numbers to the PRM's ``prm.json`` and re-render its model card."""
    meta = PRMMeta.load(path)
    meta.evals[name] = numbers
    meta.save(path)
    write_model_card(path, meta)
