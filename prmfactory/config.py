"""Stage configuration: pydantic models, YAML loading, CLI flags over YAML (DESIGN.md §3.2).

Every stage has a ``<Stage>Config`` subclass of :class:`StageConfig`. A YAML file is either a
flat mapping of one stage's fields or a pipeline file (``stages: [{stage: NAME, config: {...}}]``),
from which the stage's own section is taken. Fields that do not change what a stage writes
(progress, concurrency, limits) are marked ``affects_output=False``; only the others take part in
the "rerun with a different config" check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from prmfactory.errors import UsageError

ConfigT = TypeVar("ConfigT", bound="StageConfig")


def runtime_field(default: Any, description: str, **kwargs: Any) -> Any:
    """A config field that does not change a stage's outputs (excluded from the rerun check)."""
    return Field(default, description=description, json_schema_extra={"affects_output": False}, **kwargs)


class StageConfig(BaseModel):
    """Base of every stage config: unknown keys are errors, values are validated on assignment.

    Strict types (``rollouts: true`` or ``budget: "8"`` is an error, not 1 or 8) and no NaN or
    infinity anywhere: every number a user can type is checked before any engine starts.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)

    def output_affecting(self) -> dict[str, Any]:
        """The fields whose values change what the stage writes (nested configs included)."""
        data: dict[str, Any] = {}
        for name, field in type(self).model_fields.items():
            extra = field.json_schema_extra
            if isinstance(extra, dict) and extra.get("affects_output") is False:
                continue
            value = getattr(self, name)
            data[name] = value.output_affecting() if isinstance(value, StageConfig) else field_json(value)
        return data


def field_json(value: Any) -> Any:
    """A config value as plain JSON data."""
    from pydantic import TypeAdapter

    return TypeAdapter(Any).dump_python(value, mode="json")


def format_validation_error(exc: ValidationError, where: str, flat_model: type[BaseModel] | None = None) -> str:
    """``where: field 'name': reason`` for the first error of ``exc``.

    With ``flat_model`` (a model without nested sections), the location keeps only its field names
    and list indices, dropping the member tags pydantic adds under a union (``id.str``)."""
    first = exc.errors()[0]
    loc = [p for p in first["loc"] if flat_model is None or isinstance(p, int) or p in flat_model.model_fields]
    field = ".".join(str(p) for p in loc) or "(root)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: field {field!r}: {first['msg']}{more}"


def load_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping; any problem is a one-line error naming the file."""
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: cannot read {what}: not valid UTF-8 (byte offset {exc.start})") from exc
    except OSError as exc:
        raise UsageError(f"{path}: cannot read {what}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: cannot read {what}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a {what} file must be a mapping, got {type(data).__name__}")
    return data


def read_yaml_section(path: Path, stage: str) -> dict[str, Any]:
    """The mapping for ``stage`` in a config or pipeline YAML file."""
    data = load_yaml_mapping(path, "config")
    if "stages" not in data:
        return data
    entries = data["stages"] or []
    if not isinstance(entries, list):
        raise UsageError(f"{path}: field 'stages': expected a list of {{stage, config}}, got {type(entries).__name__}")
    for index, entry in enumerate(entries):
        if isinstance(entry, dict) and entry.get("stage") == stage:
            section = entry.get("config") or {}
            if not isinstance(section, dict):
                raise UsageError(f"{path}: stage {index}: field 'config': expected a mapping, got {type(section).__name__}")
            return dict(section)
    names = [e.get("stage") for e in entries if isinstance(e, dict)]
    raise UsageError(f"{path}: pipeline has no stage {stage!r} (it has {names})")


def build_config(cls: type[ConfigT], stage: str, config_file: Path | None, flags: dict[str, Any]) -> ConfigT:
    """Defaults, then the YAML file's section, then every flag that was given (not None)."""
    values: dict[str, Any] = read_yaml_section(config_file, stage) if config_file else {}
    merge(values, flags)
    try:
        return cls(**values)
    except ValidationError as exc:
        where = str(config_file) if config_file else f"{stage} flags"
        raise UsageError(format_validation_error(exc, where)) from exc


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Overlay the given (non-None) values on ``base``, descending into nested sections."""
    for key, value in overrides.items():
        if isinstance(value, dict) and not value:
            continue  # an empty section overrides nothing (and must not replace a malformed one silently)
        if isinstance(value, dict):
            section = base.get(key)
            if section is not None and not isinstance(section, dict):
                continue  # a malformed section stays as it is, so validation names it
            base[key] = section = dict(section) if isinstance(section, dict) else {}
            merge(section, value)
        elif value is not None:
            base[key] = value


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


class EngineConfig(StageConfig):
    """Which generation backend serves a model, and how.

    Each backend takes only its own options (:data:`BACKEND_OPTIONS`); one set for another backend
    is named in a warning, and anything vLLM takes beyond these goes in ``engine_args``, checked
    against vLLM's own ``AsyncEngineArgs`` before any engine starts.
    """

    backend: Literal["vllm", "openai"] = Field(
        "vllm", description="`vllm`: in-process engine; `openai`: an OpenAI-compatible server at base_url.")
    base_url: Optional[str] = Field(None, description="Server URL for the openai backend, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str = runtime_field("OPENAI_API_KEY", "Environment variable holding the server's API key.")
    dtype: str = Field("auto", description="Weights dtype for the in-process engine.")
    max_model_len: Optional[int] = Field(None, ge=16, description="Context length (default: the model's).")
    kv_cache_gib: float = runtime_field(1.0, "KV-cache size in GiB for the in-process engine (the reliable bound on "
                                             "CPU; on GPU, gpu_memory_utilization replaces it).", gt=0)
    gpu_memory_utilization: Optional[float] = runtime_field(
        None, "Share of each GPU's memory vLLM may use (weights, activations, KV cache); sizes the KV cache on GPU "
              "instead of kv_cache_gib.", gt=0, le=1)
    tensor_parallel_size: int = runtime_field(
        1, "GPUs one engine shards the model over; with --ray-address it is also each worker's GPU count.", ge=1)
    enforce_eager: bool = runtime_field(True, "Skip graph compilation (faster start for short runs).")
    block_size: Optional[int] = runtime_field(None, "KV block size (prefix caching granularity); engine default if unset.", ge=1)
    max_num_seqs: int = runtime_field(256, "Most sequences the engine batches at once.", ge=1)
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="More vLLM AsyncEngineArgs, passed as they are (e.g. quantization, "
                                          "pipeline_parallel_size); an unknown name is an error.")
    max_concurrency: int = runtime_field(64, "Most requests in flight to a server (openai backend).", ge=1)
    max_retries: int = runtime_field(4, "Retries of a failed server request, with exponential backoff.", ge=0)
    request_timeout_s: float = runtime_field(600.0, "Timeout of one server request.", gt=0)

    @model_validator(mode="after")
    def _one_kv_cache_bound(self) -> "EngineConfig":
        if self.gpu_memory_utilization is not None and "kv_cache_gib" in self.model_fields_set:
            raise ValueError("set either kv_cache_gib (CPU: KV-cache bytes) or gpu_memory_utilization (GPU), not both")
        return self

    def backend_options(self) -> dict[str, Any]:
        """The options the chosen backend takes; those set for the other backend are named in a warning."""
        options = BACKEND_OPTIONS[self.backend]
        ignored = sorted(f for f in self.model_fields_set - set(options) - {"backend"}
                         if getattr(self, f) != type(self).model_fields[f].get_default(call_default_factory=True))
        if ignored:
            import logging

            logging.getLogger("prmfactory").warning(
                "engine options %s have no effect with backend %s", ", ".join(ignored), self.backend)
        return {name: getattr(self, name) for name in options}


class ClusterConfig(StageConfig):
    """Where a stage's work runs: in this process (no ``ray_address``), or over a pool of Ray workers.

    Every field is a runtime choice: a run's outputs are the same wherever its questions ran.
    """

    ray_address: Optional[str] = runtime_field(
        None, "Unset: in this process. `local`: start a Ray cluster on this machine; `auto`: join the running "
              "cluster; `ray://host:port`: connect through Ray Client.")
    workers: Optional[int] = runtime_field(
        None, "Ray workers, each with its own engine (default: as many as the cluster's GPUs, or CPUs, hold).", ge=1)
    gpus_per_worker: Optional[float] = runtime_field(
        None, "GPUs per worker (default: engine.tensor_parallel_size on a cluster with GPUs, else 0).", ge=0)
    cpus_per_worker: float = runtime_field(1.0, "CPUs per worker.", gt=0)
    max_attempts: int = runtime_field(
        3, "Workers a question may lose (killed, out of memory, dead engine) before it is given up on.", ge=1)


def cluster_field() -> Any:
    """The ``cluster`` section of a stage config that can run on Ray (not output-affecting)."""
    return Field(default_factory=ClusterConfig, description="Where the work runs (--ray-address and friends).",
                 json_schema_extra={"affects_output": False})


# What each backend's constructor takes from EngineConfig (the model and seed come from the stage).
BACKEND_OPTIONS: dict[str, tuple[str, ...]] = {
    "vllm": ("dtype", "max_model_len", "kv_cache_gib", "gpu_memory_utilization", "tensor_parallel_size",
             "enforce_eager", "block_size", "max_num_seqs", "engine_args"),
    "openai": ("base_url", "api_key_env", "max_concurrency", "max_retries", "request_timeout_s"),
}
