"""Forms built from run-config dataclasses, so the screens and the YAML files share one definition.

    fields = build_form(RewardRunConfig, choices={"method": ["full", "lora"]}, skip={"data"})
    cfg = form_config(RewardRunConfig, {"data": path, **dict(zip(fields, values))})

Each field becomes a component labelled with its name and its ``help`` text; values coming
back are checked by :func:`rlhf.config.config_from_dict`, so a bad value gets the same message
in the studio as in a YAML file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import gradio as gr

from rlhf.config import config_from_dict


def _base_type(hint: Any) -> Any:
    """``int | None`` -> int."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return options[0] if len(options) == 1 else str
    return hint


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def build_form(cls: type, choices: dict[str, list] | None = None, skip: set[str] | frozenset = frozenset()) -> dict[str, gr.Component]:
    """One component per config field (in field order), created in the current Blocks context."""
    choices = choices or {}
    hints = typing.get_type_hints(cls)
    out: dict[str, gr.Component] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind, default = _base_type(hints[f.name]), _default(f)
        common = {"label": f.name.replace("_", " "), "info": f.metadata.get("help"), "elem_id": f"cfg-{cls.__name__}-{f.name}"}
        if f.name in choices:
            out[f.name] = gr.Dropdown(choices=choices[f.name], value=default, **common)
        elif kind is bool:
            out[f.name] = gr.Checkbox(value=bool(default), **common)
        elif kind is int:
            out[f.name] = gr.Number(value=default, precision=0, **common)
        elif kind is float:
            out[f.name] = gr.Number(value=default, **common)
        else:
            out[f.name] = gr.Textbox(value="" if default is None else str(default), **common)
    return out


def form_config(cls: type, values: dict[str, Any]) -> Any:
    """The config from form values; blank optional fields become None. Raises ConfigError."""
    hints = typing.get_type_hints(cls)
    data: dict[str, Any] = {}
    for name, value in values.items():
        kind = _base_type(hints[name])
        if isinstance(value, str):
            value = value.strip()
        if value == "" or value is None:
            if type(None) in typing.get_args(hints[name]):
                data[name] = None
            continue  # a required field left blank keeps its default
        if kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        data[name] = value
    return config_from_dict(cls, data)
