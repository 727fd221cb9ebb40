"""The "Reward model" screen: train a reward model from a snapshot, watch it, try it.

An ML engineer picks a snapshot (or any TRL / HH-RLHF preference file), a base model and the
settings of :class:`rlhf.reward.RewardRunConfig`; the screen shows the config file and the
equivalent command, and launch starts that command as a subprocess (see ``studio/launcher.py``).
Runs are watched through their folders; the "try it" box scores one prompt with two replies
under any registered reward model. Every handler checks the caller may train (on the server);
every path typed here (data, held-out data) must lie inside the data folders, and the config is
checked completely before a run folder is made. Run alone: ``python -m studio.reward_tab``.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import gradio as gr

from annotations.snapshot import list_snapshots
from rlhf.config import ConfigError, config_yaml
from rlhf.launch import command_preview
from rlhf.modelfiles import ModelError
from rlhf.reward import RewardRunConfig
from studio.config_form import LAUNCH_CHOICES, build_form, confine_config, confine_paths, form_config, not_ready
from studio.context import StudioContext
from studio.permissions import TRAIN, allowed, current_user, data_path, require
from studio.render import UserError
from studio.run_monitor import Chart, build_monitor

KIND = "reward"
CHARTS = (
    Chart("Training loss", ("loss",)),
    Chart("Pairwise accuracy (training batches) and margin", ("accuracy", "margin")),
    Chart("Method head: texts read per second by the frozen base", ("texts_per_second",)),
)
METRICS = ("eval_accuracy", "eval_mean_margin", "eval_accuracy_surest_third", "train_pairs")
MAIN_FIELDS = ("method", "heads", "prompt_format", "learning_rate", "epochs", "batch_size", "max_length", "register_as")
SPECIAL_FIELDS = {"data", "base_model"}


def data_choices(ctx: StudioContext) -> list[tuple[str, str]]:
    """Snapshots, newest first, as (label, folder)."""
    out = []
    for snap in list_snapshots(ctx.store):
        counts = snap["counts"]
        source = f"{counts.get('battles', 0)} arena votes" if snap["pair_strategy"] == "arena" else f"{counts.get('rankings', 0)} rankings"
        out.append((f"{snap['id']} · {counts.get('pairs', 0)} pairs from {source}", snap["folder"]))
    return out


DEFAULT_BASE = RewardRunConfig.__dataclass_fields__["base_model"].default


def base_model_choices(ctx: StudioContext) -> list[str]:
    """Causal LMs first (a frozen SmolLM2 with five heads is the default recipe), then encoders."""
    return ctx.registry.names("causal-lm") + ctx.registry.names("encoder")


def make_config(ctx: StudioContext, data: str | None, base_model: str | None, settings: dict) -> RewardRunConfig:
    """The typed config from the form; ValueError saying what to fix (gr.Error for a path outside the data folders)."""
    if not data:
        raise ValueError("Choose a snapshot (Admin -> Snapshots makes one) or type the path of a preference file.")
    typed = data
    data = str(data_path(ctx.data_roots, data))
    settings = confine_paths(settings, ctx.data_roots)
    if not Path(data).exists():
        raise ValueError(f"{typed} does not exist; choose a snapshot or type the path of a preference file.")
    if not base_model:
        raise ValueError("Choose a base model.")
    try:
        ctx.registry.get(base_model)
    except ModelError as exc:
        raise ValueError(str(exc)) from exc
    try:
        return form_config(RewardRunConfig, {"data": data, "base_model": base_model, **settings})
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc


def preview(ctx: StudioContext, data: str | None, base_model: str | None, settings: dict) -> tuple[str, str]:
    """(config YAML, the equivalent command) or an explanation of what is missing."""
    try:
        cfg = make_config(ctx, data, base_model, settings)
    except (ValueError, gr.Error) as exc:
        return f"# not ready: {not_ready(exc)}\n", ""
    command = command_preview("reward", cfg, ctx.launcher.root)
    return config_yaml(cfg), f"Save the config as `run.yaml`, then the same run from a terminal is:\n\n```\n{command}\n```"


def launch(ctx: StudioContext, data: str | None, base_model: str | None, settings: dict, request: gr.Request | None) -> str:
    """Start a reward run; returns its id. Nothing is made unless the config can run."""
    require(ctx.store, request, TRAIN)
    try:
        cfg = confine_config(make_config(ctx, data, base_model, settings), ctx.data_roots)
        return ctx.launcher.start(KIND, cfg, registry=ctx.registry).id
    except ValueError as exc:  # ConfigError included: data, models and register_as checked before the folder
        raise UserError(str(exc)) from exc


def try_it(ctx: StudioContext, model: str | None, prompt: str, reply_a: str, reply_b: str, request: gr.Request | None) -> str:
    """Score two replies to one prompt; Markdown saying which the model prefers and how strongly."""
    require(ctx.store, request, TRAIN)
    if not model:
        raise UserError("Choose a reward model (train one above, or register one with `rlhf-studio models add`).")
    if not (reply_a or "").strip() or not (reply_b or "").strip():
        raise UserError("Write both replies.")
    try:
        scorer = ctx.scorers.get(model)
    except ModelError as exc:
        raise UserError(str(exc)) from exc
    heads = scorer.score_heads([(prompt or "", reply_a), (prompt or "", reply_b)])
    a, b = heads.mean(1).tolist()
    p_a = 1 / (1 + math.exp(-(a - b)))
    better = "A" if a > b else "B" if b > a else None
    verdict = f"**{html.escape(model)} prefers reply {better}**" if better else f"**{html.escape(model)} scores them equal**"
    text = f"{verdict}: A {a:+.3f}, B {b:+.3f}; P(A preferred) = {p_a:.2f} (Bradley-Terry)."
    if scorer.heads > 1:
        spread = heads.std(1).tolist()
        agree = int(((heads[0] > heads[1]) == (a > b)).sum()) if better else 0
        text += (
            f" An ensemble of {scorer.heads} heads: {agree} of {scorer.heads} agree; "
            f"uncertainty (the heads' spread) A ±{spread[0]:.3f}, B ±{spread[1]:.3f}."
        )
    return text


def build(ctx: StudioContext) -> gr.Blocks:
    with gr.Blocks() as screen:
        gr.Markdown(
            "Train a reward model on frozen rankings. A run is a subprocess writing to its own folder: "
            "it keeps going if you close the page or restart the studio."
        )
        with gr.Row():
            with gr.Column(scale=2):
                gr.Markdown("### New run")
                data = gr.Dropdown(
                    label="Data",
                    info="a snapshot, or type the path of a TRL or HH-RLHF preference file",
                    choices=data_choices(ctx),
                    allow_custom_value=True,
                    elem_id="reward-data",
                )
                base = gr.Dropdown(
                    label="Base model", choices=base_model_choices(ctx), value=DEFAULT_BASE, allow_custom_value=True, elem_id="reward-base"
                )
                choices = {
                    "method": ["head", "full", "lora"],
                    "prompt_format": ["chat", "transcript"],
                    "pooling": ["auto", "mean", "cls", "reply_mean"],
                    **LAUNCH_CHOICES,
                }
                main = build_form(RewardRunConfig, choices, skip=SPECIAL_FIELDS | (set(_all_fields()) - set(MAIN_FIELDS)))
                with gr.Accordion("More settings", open=False):
                    more = build_form(RewardRunConfig, choices, skip=SPECIAL_FIELDS | set(MAIN_FIELDS))
                launch_btn = gr.Button("Launch run", variant="primary", elem_id="reward-launch")
                with gr.Accordion("Config file and command", open=False):
                    yaml_box = gr.Code(language="yaml", interactive=False, elem_id="reward-yaml")
                    command = gr.Markdown(elem_id="reward-command")
            with gr.Column(scale=3):
                gr.Markdown("### Runs")
                monitor = build_monitor(ctx, KIND, CHARTS, METRICS)
        with gr.Accordion("Try it: score two replies", open=True):
            with gr.Row():
                model = gr.Dropdown(label="Reward model", choices=ctx.registry.names("reward-model"), elem_id="try-model", scale=1)
                prompt = gr.Textbox(label="Prompt", lines=2, elem_id="try-prompt", scale=3)
            with gr.Row():
                reply_a = gr.Textbox(label="Reply A", lines=3, elem_id="try-a")
                reply_b = gr.Textbox(label="Reply B", lines=3, elem_id="try-b")
            score_btn = gr.Button("Score", elem_id="try-score")
            verdict = gr.Markdown(elem_id="try-verdict")

        fields = {**main, **more}
        inputs = {data, base, *fields.values()}  # a set: handlers get {component: value}

        def settings(values: dict) -> dict:
            return {name: values[comp] for name, comp in fields.items()}

        def on_preview(values: dict, request: gr.Request):
            require(ctx.store, request, TRAIN)
            return preview(ctx, values[data], values[base], settings(values))

        def on_launch(values: dict, request: gr.Request):
            require(ctx.store, request, TRAIN)
            run_id = launch(ctx, values[data], values[base], settings(values), request)
            return gr.Dropdown(choices=[r.id for r in ctx.launcher.runs(KIND)], value=run_id)

        def on_refresh(request: gr.Request):
            # Checked on the server like every handler; annotators load the page too, so they get
            # nothing from here rather than an error toast on every page load.
            if not allowed(current_user(ctx.store, request), TRAIN):
                return tuple(gr.skip() for _ in range(5))
            return (
                gr.update(choices=data_choices(ctx)),
                gr.update(choices=base_model_choices(ctx)),
                gr.update(choices=ctx.registry.names("reward-model")),
                gr.update(choices=[r.id for r in ctx.launcher.runs(KIND)]),
                gr.Timer(active=True),
            )

        gr.on(
            [c.change for c in [data, base, *fields.values()]],
            on_preview,
            inputs,
            [yaml_box, command],
            api_name=False,
            show_progress="hidden",
        )
        launch_btn.click(on_launch, inputs, monitor.run, api_name="launch_reward_run")

        def on_score(m, p, a, b, request: gr.Request):
            require(ctx.store, request, TRAIN)
            return try_it(ctx, m, p, a, b, request)

        def on_models_focus(request: gr.Request):
            require(ctx.store, request, TRAIN)
            return gr.update(choices=ctx.registry.names("reward-model"))

        def on_data_focus(request: gr.Request):
            require(ctx.store, request, TRAIN)
            return gr.update(choices=data_choices(ctx))

        def on_base_focus(request: gr.Request):
            require(ctx.store, request, TRAIN)
            return gr.update(choices=base_model_choices(ctx))

        # Lists are read again when opened: snapshots and models appear while the page is open.
        data.focus(on_data_focus, None, data, api_name=False)
        base.focus(on_base_focus, None, base, api_name=False)
        score_btn.click(on_score, [model, prompt, reply_a, reply_b], verdict, api_name="score_replies")
        model.focus(on_models_focus, None, model, api_name=False)
        screen.load(on_refresh, None, [data, base, model, monitor.run, monitor.timer], api_name=False)
    return screen


def _all_fields() -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(RewardRunConfig)]


if __name__ == "__main__":
    from studio.app import standalone

    standalone(build)
