"""Run configs: dataclasses with ``help`` metadata, read from and written to YAML.

    cfg = load_config(RewardConfig, Path("run.yaml"))     # unknown or mistyped keys: ConfigError
    save_config(cfg, Path("runs/x/config.yaml"))          # each key preceded by its help text

Every trainer's config is a dataclass whose fields carry ``metadata={"help": ...}``; the UI
builds forms from the same fields, and the file written is the one the command reads back.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the key and what is allowed."""


def _coerce(name: str, value: Any, kind: Any) -> Any:
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(name, value, option)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{name}: invalid value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(name, v, inner) for v in value]
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    if kind is Any:
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected a whole number, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected text, got {value!r}")
        return value
    return value


def config_from_dict(cls: type[T], data: dict) -> T:
    """Build ``cls`` from a mapping, checking every key and value type."""
    if not isinstance(data, dict):
        raise ConfigError(f"a {cls.__name__} must be a mapping of keys to values")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} for {cls.__name__}; allowed: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(name, value, hints[name]) for name, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from exc


def load_config(cls: type[T], path: Path) -> T:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from exc
    if data is None or data == {}:
        # An empty file would otherwise train on defaults with no data, and fail only later.
        raise ConfigError(f"config file {path} is empty; write its settings as 'key: value' lines (recipes/ has one per kind)")
    return config_from_dict(cls, data)


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def config_yaml(cfg: Any) -> str:
    """The config as YAML, each key preceded by its help text as a comment."""
    lines = [f"# {type(cfg).__name__}"]
    for f in dataclasses.fields(cfg):
        help_text = f.metadata.get("help")
        if help_text:
            lines.append(f"# {help_text}")
        lines.append(yaml.safe_dump({f.name: getattr(cfg, f.name)}, sort_keys=False, allow_unicode=True).rstrip())
    return "\n".join(lines) + "\n"


def save_config(cfg: Any, path: Path) -> Path:
    """Write :func:`config_yaml` atomically, owner-only (configs name data files and models)."""
    from rlhf.paths import private_dir, write_private

    path = Path(path)
    private_dir(path.parent)
    return write_private(path, config_yaml(cfg))
