"""A training screen built from a spec: data + model pickers, the typed config form, launch, monitor.

Instruction tuning (SFT), DPO, GRPO and RLOO share this shape; each is a :class:`Spec` in its
own module (``studio/sft_tab.py``, ``studio/dpo_tab.py``, ``studio/online_tab.py``). A spec with
``rewards_field`` also gets the reward-source and held-out judge pickers (``studio/reward_sources.py``,
the same as PPO's), and one with ``warnings`` shows a run's reward-hacking warnings and latest
sample replies under its charts. Data can be a store project (exported to a
file under the runs folder at launch, because runs never open the database), a snapshot, or a
path typed by hand, which must lie inside the data folders. Every handler checks the caller may
train (on the server), and the config is checked completely before a run folder is made.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import gradio as gr
import pandas as pd

from annotations.store import StoreError
from rlhf.config import ConfigError, config_yaml
from rlhf.launch import command_preview
from rlhf.modelfiles import ModelError
from rlhf.paths import private_dir
from studio.config_form import PROJECT_PREFIX, build_form, confine_config, confine_paths, form_config, not_ready
from studio.context import StudioContext
from studio.permissions import TRAIN, allowed, current_user, data_path, require
from studio.render import UserError
from studio.reward_sources import build_pickers, source_models
from studio.run_monitor import Chart, build_monitor


@dataclass(frozen=True)
class Spec:
    kind: str  # run kind: sft, dpo, grpo, rloo
    cfg_cls: type
    intro: str
    data_field: str
    data_label: str
    data_info: str
    data_choices: Callable[[StudioContext], list[tuple[str, str]]]
    export: Callable | None  # (store, project, path) -> count, for "project:NAME" data
    model_field: str
    model_label: str
    main_fields: tuple[str, ...]
    choices: dict
    charts: tuple[Chart, ...]
    metrics: tuple[str, ...]
    launch_label: str
    rewards_field: str | None = None  # the config's list of reward sources: the screen shows the reward-source pickers
    judge_field: str | None = None  # the config's held-out judge list (with rewards_field), picked like the rewards
    # (events, config) -> warnings about a run, shown with its latest sample replies (rlhf.ppo.warnings_for's shape)
    warnings: Callable[[list[dict], dict], list[str]] | None = None


SAMPLE_COLUMNS = ["step", "prompt", "reply", "reward", "ended"]


def run_samples_and_warnings(ctx: StudioContext, run_id: str | None, warnings: Callable) -> tuple[pd.DataFrame, str]:
    """The latest sample replies of a run (an event's ``samples``) and its warnings as Markdown.

    ``warnings(events, target_kl, max_new_tokens)``, as :func:`rlhf.ppo.warnings_for`."""
    empty = pd.DataFrame(columns=SAMPLE_COLUMNS)
    if not run_id:
        return empty, ""
    try:
        run = ctx.launcher.get(run_id)
    except ValueError:
        return empty, ""
    events = run.events()
    rows = []
    for event in reversed(events):
        if event.get("samples"):
            rows = [[event["step"], s["prompt"], s["reply"], round(s["reward"], 3), s["ended"]] for s in event["samples"]]
            break
    cfg = run.config()
    found = warnings(events, cfg.get("target_kl"), cfg.get("max_new_tokens"))
    text = "\n".join(f"- ⚠️ {w}" for w in found)
    return (pd.DataFrame(rows, columns=SAMPLE_COLUMNS) if rows else empty), (f"**Warnings**\n\n{text}" if text else "")


def project_choices(ctx: StudioContext, what: str) -> list[tuple[str, str]]:
    return [(f"project {p.name} ({what})", PROJECT_PREFIX + p.name) for p in ctx.store.projects()]


def make_config(ctx: StudioContext, spec: Spec, data: str | None, model: str | None, settings: dict):
    if not data:
        raise ValueError(f"Choose the data: {spec.data_info}.")
    if not model:
        raise ValueError(f"Choose the {spec.model_label.lower()}.")
    try:
        entry = ctx.registry.get(model)
    except ModelError as exc:
        raise ValueError(str(exc)) from exc
    if entry.kind != "causal-lm":
        raise ValueError(f"{model} is a {entry.kind} model; choose a causal LM")
    if spec.rewards_field:
        if not settings.get(spec.rewards_field):
            raise ValueError(
                "Choose at least one reward source (a reward model, a judge, a function or similarity) with a non-zero weight."
            )
        named = source_models(settings[spec.rewards_field]) + source_models(settings.get(spec.judge_field or "") or [])
        for name in named:
            try:
                ctx.registry.get(name)
            except ModelError as exc:
                raise ValueError(str(exc)) from exc
    settings = confine_paths(settings, ctx.data_roots)
    if not data.startswith(PROJECT_PREFIX):
        typed, data = data, str(data_path(ctx.data_roots, data))
        if not Path(data).exists():
            raise ValueError(f"{typed} does not exist; {spec.data_info}.")
    try:
        return form_config(spec.cfg_cls, {spec.data_field: data, spec.model_field: model, **settings})
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc


def preview(ctx: StudioContext, spec: Spec, data: str | None, model: str | None, settings: dict) -> tuple[str, str]:
    try:
        cfg = make_config(ctx, spec, data, model, settings)
    except (ValueError, gr.Error) as exc:
        return f"# not ready: {not_ready(exc)}\n", ""
    command = command_preview(spec.kind, cfg, ctx.launcher.root)
    note = (
        "\n\nAt launch the project's data is exported to a JSONL file; the config names it."
        if (data or "").startswith(PROJECT_PREFIX)
        else ""
    )
    return config_yaml(cfg), f"Save the config as `run.yaml`, then the same run from a terminal is:\n\n```\n{command}\n```{note}"


def launch(ctx: StudioContext, spec: Spec, data: str | None, model: str | None, settings: dict, request) -> str:
    """Start a run; a project's data is exported to a file first. Nothing is made unless the config can run."""
    require(ctx.store, request, TRAIN)
    try:
        cfg = make_config(ctx, spec, data, model, settings)
        value = getattr(cfg, spec.data_field)
        if value.startswith(PROJECT_PREFIX):
            if spec.export is None:
                raise ValueError("this screen cannot read a project; choose a file")
            project = value[len(PROJECT_PREFIX) :]
            safe = re.sub(r"[^A-Za-z0-9_-]+", "-", project).strip("-") or "project"
            path = private_dir(ctx.launcher.root / "data-sets") / f"{spec.kind}-{safe}-{datetime.now():%Y%m%d-%H%M%S}.jsonl"
            spec.export(ctx.store, project, path)
            cfg = dataclasses.replace(cfg, **{spec.data_field: str(path)})
        cfg = confine_config(cfg, ctx.data_roots)
        return ctx.launcher.start(spec.kind, cfg, registry=ctx.registry).id
    except (ValueError, StoreError) as exc:
        raise UserError(str(exc)) from exc


def build_screen(ctx: StudioContext, spec: Spec) -> gr.Blocks:
    with gr.Blocks() as screen:
        gr.Markdown(spec.intro)
        with gr.Row():
            with gr.Column(scale=2):
                gr.Markdown("### New run")
                data = gr.Dropdown(
                    label=spec.data_label,
                    info=spec.data_info,
                    choices=spec.data_choices(ctx),
                    value=None,
                    allow_custom_value=True,
                    elem_id=f"{spec.kind}-data",
                )
                model = gr.Dropdown(
                    label=spec.model_label,
                    choices=ctx.registry.names("causal-lm"),
                    value="smollm2-135m-instruct",
                    allow_custom_value=True,
                    elem_id=f"{spec.kind}-model",
                )
                pickers = build_pickers(ctx, spec.kind) if spec.rewards_field else None
                all_fields = {f.name for f in dataclasses.fields(spec.cfg_cls)}
                skip = {spec.data_field, spec.model_field} | {f for f in (spec.rewards_field, spec.judge_field) if f}
                main = build_form(spec.cfg_cls, spec.choices, skip=skip | (all_fields - set(spec.main_fields)))
                with gr.Accordion("More settings", open=False):
                    more = build_form(spec.cfg_cls, spec.choices, skip=skip | set(spec.main_fields))
                launch_btn = gr.Button(spec.launch_label, variant="primary", elem_id=f"{spec.kind}-launch")
                with gr.Accordion("Config file and command", open=False):
                    yaml_box = gr.Code(language="yaml", interactive=False, elem_id=f"{spec.kind}-yaml")
                    command = gr.Markdown(elem_id=f"{spec.kind}-command")
            with gr.Column(scale=3):
                gr.Markdown("### Runs")
                monitor = build_monitor(ctx, spec.kind, spec.charts, spec.metrics)
                if spec.warnings is not None:
                    warnings_md = gr.Markdown(elem_id=f"{spec.kind}-warnings")
                    samples = gr.DataFrame(label="Latest sample replies", interactive=False, wrap=True, elem_id=f"{spec.kind}-samples")

        fields = {**main, **more}
        picked = pickers.inputs if pickers else []
        inputs = {data, model, *picked, *fields.values()}

        def parts(values: dict) -> tuple:
            settings = {name: values[c] for name, c in fields.items()}
            if pickers is not None and spec.rewards_field:
                rewards, judge = pickers.specs(values)
                settings[spec.rewards_field] = rewards
                if spec.judge_field:
                    settings[spec.judge_field] = judge
            return values[data], values[model], settings

        def on_preview(values: dict, request: gr.Request):
            require(ctx.store, request, TRAIN)
            return preview(ctx, spec, *parts(values))

        def on_launch(values: dict, request: gr.Request):
            require(ctx.store, request, TRAIN)
            run_id = launch(ctx, spec, *parts(values), request)
            return gr.update(choices=[r.id for r in ctx.launcher.runs(spec.kind)], value=run_id)

        def on_refresh(request: gr.Request):
            # Checked on the server; annotators load the page too: nothing for them, and no error toast.
            if not allowed(current_user(ctx.store, request), TRAIN):
                return tuple(gr.skip() for _ in loaded)
            return (
                gr.update(choices=spec.data_choices(ctx)),
                gr.update(choices=ctx.registry.names("causal-lm")),
                *(pickers.refreshed(ctx) if pickers else []),
                gr.update(choices=[r.id for r in ctx.launcher.runs(spec.kind)]),
                gr.Timer(active=True),
            )

        def on_data_focus(request: gr.Request):
            require(ctx.store, request, TRAIN)
            return gr.update(choices=spec.data_choices(ctx))

        def on_model_focus(request: gr.Request):
            require(ctx.store, request, TRAIN)
            return gr.update(choices=ctx.registry.names("causal-lm"))

        ordered = [data, model, *picked, *fields.values()]
        gr.on([c.change for c in ordered], on_preview, inputs, [yaml_box, command], api_name=False, show_progress="hidden")
        launch_btn.click(on_launch, inputs, monitor.run, api_name=f"launch_{spec.kind}_run")
        data.focus(on_data_focus, None, data, api_name=False)
        model.focus(on_model_focus, None, model, api_name=False)
        if pickers is not None:
            pickers.wire_focus(ctx)
        if spec.warnings is not None:
            check = spec.warnings

            def on_tick(run_id, request: gr.Request):
                require(ctx.store, request, TRAIN)
                return run_samples_and_warnings(ctx, run_id, check)

            monitor.timer.tick(on_tick, monitor.run, [samples, warnings_md], api_name=False, show_progress="hidden")
        registered = [comp for comp, _ in pickers.registered] if pickers else []
        loaded = [data, model, *registered, monitor.run, monitor.timer]
        screen.load(on_refresh, None, loaded, api_name=False)
    return screen
