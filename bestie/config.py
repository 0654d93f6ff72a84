"""Configuration: one frozen dataclass per stage, built from the YAML config.

The dataclasses are the single source of truth for keys, types and defaults: the JSON
schema in ``workflow/schemas/config.schema.yaml`` is generated from them
(``python -m bestie schema``) and a test keeps the two equal. Unknown keys and values of the
wrong type are errors that name the key (``classifier.lr``). Defaults are the official
code's values (SPEC.md §12); config/config.yaml overrides them for the small synthetic set.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from bestie.sections import (
    ClassifierConfig,
    CuesConfig,
    DatasetConfig,
    DecodeConfig,
    EvaluationConfig,
    InstanceConfig,
    LossConfig,
    MaskRcnnConfig,
    PseudoConfig,
    RefineConfig,
    ReportConfig,
    WsssConfig,
)

__all__ = [
    "ClassifierConfig",
    "Config",
    "ConfigError",
    "CuesConfig",
    "DatasetConfig",
    "DecodeConfig",
    "EvaluationConfig",
    "InstanceConfig",
    "LossConfig",
    "MaskRcnnConfig",
    "PseudoConfig",
    "RefineConfig",
    "ReportConfig",
    "WsssConfig",
    "from_dict",
    "json_schema",
    "to_dict",
]


class ConfigError(ValueError):
    """A config value is unknown, missing or of the wrong type; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole configuration of one experiment."""

    supervision: Literal["image", "point"] = "image"
    seed: int = 0
    shards: int = 1
    dataset: DatasetConfig = dataclasses.field(default_factory=DatasetConfig)
    classifier: ClassifierConfig = dataclasses.field(default_factory=ClassifierConfig)
    cues: CuesConfig = dataclasses.field(default_factory=CuesConfig)
    wsss: WsssConfig = dataclasses.field(default_factory=WsssConfig)
    pseudo: PseudoConfig = dataclasses.field(default_factory=PseudoConfig)
    instance: InstanceConfig = dataclasses.field(default_factory=InstanceConfig)
    refine: RefineConfig = dataclasses.field(default_factory=RefineConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    decode: DecodeConfig = dataclasses.field(default_factory=DecodeConfig)
    maskrcnn: MaskRcnnConfig = dataclasses.field(default_factory=MaskRcnnConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)
    experiments: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    seeds: list[int] = dataclasses.field(default_factory=list)


T = typing.TypeVar("T")


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass ``cls`` from a plain mapping, checking every key and type.

    Raises:
        ConfigError: on an unknown key, or a value whose type does not match; the message
            names the dotted key path.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{path or '<root>'}': expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        where = f" in '{path}'" if path else ""
        raise ConfigError(
            f"unknown config key '{_join(path, unknown[0])}'{where}; known keys: "
            + ", ".join(sorted(known))
        )
    values = {name: _convert(hints[name], value, _join(path, name)) for name, value in data.items()}
    return cls(**values)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)  # type: ignore[arg-type]
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(
                f"config key '{path}': {value!r} is not one of {list(typing.get_args(hint))}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{path}': expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_convert(item, element, f"{path}[{index}]") for index, element in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{path}': expected a mapping, got {value!r}")
        _, item = typing.get_args(hint)
        return {str(k): _convert(item, v, _join(path, str(k))) for k, v in value.items()}
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{path}': expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{path}': expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{path}': expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{path}': expected a string, got {value!r}")
        return value
    raise TypeError(f"config key '{path}': unsupported type {hint!r} in the dataclass")


def to_dict(instance: Any) -> Any:
    """Plain (JSON-serialisable) form of a config dataclass."""
    return dataclasses.asdict(instance)


def json_schema(cls: type = Config) -> dict[str, Any]:
    """The JSON schema (draft 7) equivalent of dataclass ``cls``: types, enums, no extra keys."""
    hints = typing.get_type_hints(cls)
    properties = {field.name: _schema_of(hints[field.name]) for field in dataclasses.fields(cls)}
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
    doc = (cls.__doc__ or "").strip().splitlines()
    if doc:
        schema["description"] = doc[0]
    return schema


def _schema_of(hint: Any) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return json_schema(hint)  # type: ignore[arg-type]
    if origin is Literal:
        return {"enum": list(typing.get_args(hint))}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema_of(option) for option in typing.get_args(hint)]}
    if origin is list:
        return {"type": "array", "items": _schema_of(typing.get_args(hint)[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_of(typing.get_args(hint)[1])}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if hint is type(None):
        return {"type": "null"}
    if hint is Any:
        return {}
    return {"type": simple[hint]}


class MissingSection:
    """Stands in for a config section that a stage was not given; any use is an error.

    Stages receive only the sections they declare (bestie/experiments.py STAGES), which is
    what makes Snakemake rerun exactly the stages whose parameters changed. Reading any other
    section would silently use defaults, so it raises instead.
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raise ConfigError(
            f"this stage was not given config section '{self._name}' (reading "
            f"'{self._name}.{attribute}'); declare it in bestie/experiments.py STAGES"
        )


def load_sections(data: dict[str, Any] | str) -> Config:
    """A Config holding only the given top-level sections (JSON text or a mapping).

    Sections that are not given are MissingSection objects, so a stage cannot read a
    section it did not declare.
    """
    import json

    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as error:
            raise ConfigError(f"stage config is not valid JSON: {error}") from error
    config = from_dict(Config, data)
    for field in dataclasses.fields(Config):
        if field.name not in data:
            object.__setattr__(config, field.name, MissingSection(field.name))
    return config
