"""Typed configs: frozen dataclasses loaded from YAML, every field overridable by a CLI flag.

A config class is a flat frozen dataclass whose fields carry defaults and a `help` in their
metadata (`field(default=3.0, metadata={"help": "..."})`). `add_config_arguments` turns each
field into `--field-name`, `load_config` layers defaults < YAML file < flags, and rejects unknown
keys with the list of known ones, so a typo in a YAML file is an error and not a silent default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


def config_field(default: Any, help_text: str) -> Any:
    """A config field with its `--help` text (read by `add_config_arguments`)."""
    return dataclasses.field(default=default, metadata={"help": help_text})


class ConfigError(ValueError):
    """A configuration the job cannot run with (unknown key, wrong type, bad value)."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _scalar_type(annotation: Any) -> Any:
    """`float | None` -> float; `tuple[str, ...]` -> tuple; plain types unchanged."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar_type(args[0]) if len(args) == 1 else str
    return origin or annotation


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    if value is None:
        return None
    target = _scalar_type(annotation)
    try:
        if target is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in {"1", "true", "yes", "on"}:
                    return True
                if lowered in {"0", "false", "no", "off"}:
                    return False
                raise ValueError(value)
            return bool(value)
        if target in (int, float, str):
            if target is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return target(value)
        if target in (tuple, list):
            if isinstance(value, str):
                value = [v for v in value.split(",") if v]
            return tuple(value)
        if target is dict:
            return dict(json.loads(value) if isinstance(value, str) else value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key {name!r}: expected {getattr(target, '__name__', target)}, "
                          f"found {value!r}") from exc
    return value


def read_yaml_mapping(path: str | Path | None) -> dict[str, Any]:
    """The mapping in the YAML file at `path` ({} for None); a missing file, a file that is not
    UTF-8 YAML (the parser's line and column in the message) or a non-mapping is a ConfigError."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{at}: {problem}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping, found {type(loaded).__name__}")
    return dict(loaded)


def load_config(cls: type[C], path: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> C:
    """Defaults < YAML file at `path` < `overrides` (None values ignored), type-checked."""
    known = _field_types(cls)
    values: dict[str, Any] = read_yaml_mapping(path)
    values.update({k.replace("-", "_"): v for k, v in (overrides or {}).items() if v is not None})
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
    coerced = {k: _coerce(k, v, known[k]) for k, v in values.items()}
    config = cls(**coerced)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *,
                         skip: typing.Iterable[str] = ()) -> None:
    """Add one `--field-name` flag per config field; unset flags leave the YAML/default value."""
    group = parser.add_argument_group(f"{cls.__name__} (any key of the YAML config)")
    types_by_name = _field_types(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f.metadata.get("help", "")
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                           metavar=getattr(_scalar_type(types_by_name[f.name]), "__name__", "VALUE").upper(),
                           help=f"{help_text} (default: {default!r})")


def overrides_from_args(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def config_to_dict(config: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}


def save_config(config: Any, path: str | Path) -> None:
    """Save the resolved config beside a job's outputs, so every output says how it was made."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
