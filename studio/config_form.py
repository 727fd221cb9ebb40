"""Forms built from run-config dataclasses, so the screens and the YAML files share one definition.

    fields = build_form(RewardRunConfig, choices={"method": ["full", "lora"]}, skip={"data"})
    cfg = form_config(RewardRunConfig, {"data": path, **dict(zip(fields, values))})

Each field becomes a component labelled with its name and its ``help`` text; values coming
back are checked by :func:`rlhf.config.config_from_dict`, so a bad value gets the same message
in the studio as in a YAML file.

Fields that name files (:data:`PATH_FIELDS`: data, held-out data, prompts) are paths an admin
typed: :func:`confine_paths` and :func:`confine_config` resolve each one inside the data folders
(``studio.permissions.data_path``) or refuse it, so no config the studio launches reads a file
outside them.
"""

from __future__ import annotations

import dataclasses
import html
import types
import typing
from typing import Any

import gradio as gr

from rlhf.config import config_from_dict
from rlhf.launch import ACCELERATE_CONFIGS
from studio.permissions import data_path

PATH_FIELDS = ("data", "eval_data", "prompts", "eval_prompts")
# The launch fields' dropdowns on every training screen: an accelerate config by name (recipes/accelerate);
# a config file of one's own is named in a run.yaml on the command line.
LAUNCH_CHOICES = {"launcher": ["python", "accelerate"], "accelerate_config": ["", *ACCELERATE_CONFIGS]}
PROJECT_PREFIX = "project:"  # "project:NAME": a store project, exported to a file at launch


def prompts_file(store, runs_root, value: str) -> str:
    """The prompts file a run reads: a project's prompts exported under ``runs_root/prompt-sets``
    (runs never open the database), or the file named, which must exist. ValueError / StoreError if not.
    """
    import re
    from datetime import datetime
    from pathlib import Path

    from annotations.export import export_prompts
    from rlhf.paths import private_dir

    if value.startswith(PROJECT_PREFIX):
        project = value[len(PROJECT_PREFIX) :]
        store.project(project)  # an unknown project is refused before anything is written
        safe = re.sub(r"[^A-Za-z0-9_-]+", "-", project).strip("-") or "project"
        path = private_dir(Path(runs_root) / "prompt-sets") / f"{safe}-{datetime.now():%Y%m%d-%H%M%S}.jsonl"
        export_prompts(store, project, path)
        return str(path)
    if not Path(value).is_file():
        raise ValueError(f"{value} does not exist; choose a project or type the path of a prompts file.")
    return value


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


def confine_paths(values: dict[str, Any], roots: list) -> dict[str, Any]:
    """``values`` with every non-blank path field resolved inside the data folders (gr.Error if outside).

    A ``project:NAME`` value is left for the screen to export (into the runs folder) at launch.
    """
    out = dict(values)
    for name in PATH_FIELDS:
        value = out.get(name)
        if isinstance(value, str) and value.strip() and not value.startswith(PROJECT_PREFIX):
            out[name] = str(data_path(roots, value))
    return out


def confine_config(cfg: Any, roots: list) -> Any:
    """The config with every path field it has resolved inside the data folders; gr.Error naming them if not.

    The last check before a launch: whatever the form or an export put in the config, the run
    reads only files in the data folders.
    """
    present = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name in PATH_FIELDS}
    for name, value in present.items():
        if isinstance(value, str) and value.startswith(PROJECT_PREFIX):
            raise ValueError(f"{name}: the project {value[len(PROJECT_PREFIX) :]} was not exported to a file")
    return dataclasses.replace(cfg, **confine_paths(present, roots))


def not_ready(exc: Exception) -> str:
    """An error's message as plain text for a config preview (gr.Error messages arrive HTML-escaped)."""
    return html.unescape(exc.message) if isinstance(exc, gr.Error) else str(exc)
