"""The "PPO" screen: tune a policy against reward sources, watch it for reward hacking, chat with it.

An ML engineer picks the policy, the prompts (a project of the store, exported to a file for the
run, or any prompts file), one or more reward sources with weights (a trained reward model, an
AI judge = RLAIF, a Python function, similarity to reference answers) and the settings of
:class:`rlhf.ppo.PPORunConfig`. Launch starts ``rlhf-studio train ppo`` as a subprocess; the
screen plots its diagnostics, shows sample replies and warns when KL runs away or replies
collapse. An optional held-out judge (a source the policy is not trained on) scores the held-out
replies at every evaluation: a chart of the training reward's and the judge's gains against KL
appears once a run has judge scores, a warning says when the training reward is being
over-optimised, and ``early_stop_patience`` stops the run at the judge's best.
The finished policy is registered: it appears in the chat and in candidate generation.
Every handler checks the caller may train (on the server); prompts files typed here must lie
inside the data folders, and the config is checked completely before a run folder is made.
Run alone: ``python -m studio.ppo_tab``.
"""

from __future__ import annotations

import dataclasses

import gradio as gr
import pandas as pd

from annotations.store import StoreError
from rlhf.config import ConfigError, config_yaml
from rlhf.launch import command_preview
from rlhf.modelfiles import ModelError
from rlhf.ppo import PPORunConfig, warnings_for
from rlhf.registry import DEFAULT_CHAT_MODEL
from studio.config_form import LAUNCH_CHOICES, build_form, confine_config, confine_paths, form_config, not_ready, prompts_file
from studio.context import StudioContext
from studio.permissions import TRAIN, allowed, current_user, data_path, require
from studio.render import UserError
from studio.reward_sources import build_pickers, judge_specs, reward_specs  # noqa: F401  (moved there; importable here)
from studio.run_monitor import Chart, build_monitor
from studio.training_screen import run_samples_and_warnings

KIND = "ppo"
CHARTS = (
    Chart("Reward (training batch, held-out)", ("reward_mean", "eval_reward")),
    Chart("KL to the reference (nats per reply)", ("kl", "eval_kl")),
    Chart("Entropy per token", ("entropy",)),
    Chart("Reply length (tokens) and end-of-turn rate", ("reply_length", "eos_rate")),
    Chart("Clip fraction and approximate KL", ("clipfrac", "approx_kl")),
    Chart("Value loss", ("value_loss",)),
    # Drawn only for a run with a held-out judge: the six charts above are the page's budget (a
    # seventh always-present one stalled the browser test's page in CI).
    Chart(
        "Held-out: training reward and judge over KL",
        ("eval_reward", "eval_judge"),
        x="eval_kl",
        x_label="held-out KL to the reference (nats per reply)",
        from_start=True,
        only_with="eval_judge",
    ),
)
METRICS = ("eval_reward_gain", "eval_kl_end", "episodes", "judged_win_rate_vs_start")
MAIN_FIELDS = (
    "method",
    "steps",
    "batch_size",
    "max_new_tokens",
    "learning_rate",
    "kl_coef",
    "target_kl",
    "length_debias",
    "early_stop_patience",
    "register_as",
)
# heldout_judge: edited like rewards, with its own source pickers; kl_horizon: retired, kept so old configs load
SPECIAL_FIELDS = {"prompts", "policy", "rewards", "heldout_judge", "kl_horizon"}
PROJECT_PREFIX = "project:"


def prompt_choices(ctx: StudioContext) -> list[tuple[str, str]]:
    return [(f"project {p.name} ({ctx.store.count_prompts(p.id)} prompts)", PROJECT_PREFIX + p.name) for p in ctx.store.projects()]


def make_config(ctx: StudioContext, prompts: str | None, policy: str | None, rewards: list[dict], settings: dict) -> PPORunConfig:
    """The typed config from the form; ValueError saying what to fix. Projects are resolved later."""
    if not prompts:
        raise ValueError("Choose the prompts: a project, or type the path of a prompts file.")
    if not prompts.startswith(PROJECT_PREFIX):
        prompts = str(data_path(ctx.data_roots, prompts))
    settings = confine_paths(settings, ctx.data_roots)
    if not policy:
        raise ValueError("Choose the policy model.")
    value_model = (settings.get("value_model") or "").strip()
    judged = [s["model"] for s in settings.get("heldout_judge") or [] if isinstance(s, dict) and "model" in s]
    for name in [policy] + [s["model"] for s in rewards if "model" in s] + judged + ([value_model] if value_model else []):
        try:
            ctx.registry.get(name)
        except ModelError as exc:
            raise ValueError(str(exc)) from exc
    if ctx.registry.get(policy).kind != "causal-lm":
        raise ValueError(f"{policy} is a {ctx.registry.get(policy).kind} model; the policy must be a causal LM")
    if not rewards:
        raise ValueError("Choose at least one reward source (a reward model, a judge, a function or similarity) with a non-zero weight.")
    try:
        return form_config(PPORunConfig, {"prompts": prompts, "policy": policy, "rewards": rewards, **settings})
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc


def preview(ctx: StudioContext, prompts: str | None, policy: str | None, rewards: list[dict], settings: dict) -> tuple[str, str]:
    try:
        cfg = make_config(ctx, prompts, policy, rewards, settings)
    except (ValueError, gr.Error) as exc:
        return f"# not ready: {not_ready(exc)}\n", ""
    note = ""
    if cfg.prompts.startswith(PROJECT_PREFIX):
        note = f"\n\nAt launch the project's prompts are exported to a JSONL file under `{ctx.launcher.root}`; the config names it."
    command = command_preview("ppo", cfg, ctx.launcher.root)
    return config_yaml(cfg), f"Save the config as `run.yaml`, then the same run from a terminal is:\n\n```\n{command}\n```{note}"


def launch(ctx: StudioContext, prompts: str | None, policy: str | None, rewards: list[dict], settings: dict, request) -> str:
    """Start a PPO run; a project's prompts are exported to a file first (runs never read the database).

    Nothing is made unless the config can run (its files, models and register_as are checked first).
    """
    require(ctx.store, request, TRAIN)
    try:
        cfg = make_config(ctx, prompts, policy, rewards, settings)
        cfg = dataclasses.replace(cfg, prompts=prompts_file(ctx.store, ctx.launcher.root, cfg.prompts))
        cfg = confine_config(cfg, ctx.data_roots)
        return ctx.launcher.start(KIND, cfg, registry=ctx.registry).id
    except (ValueError, StoreError) as exc:
        raise UserError(str(exc)) from exc


def samples_and_warnings(ctx: StudioContext, run_id: str | None) -> tuple[pd.DataFrame, str]:
    """The latest sample replies of a run and any reward-hacking warnings."""
    return run_samples_and_warnings(ctx, run_id, warnings_for)


def build(ctx: StudioContext) -> gr.Blocks:
    with gr.Blocks() as screen:
        gr.Markdown(
            "Tune a policy with PPO against one or more reward sources. The reference is the policy with its adapters "
            "switched off; the KL penalty keeps the policy close to it. Runs keep going if you close the page."
        )
        with gr.Row():
            with gr.Column(scale=2):
                gr.Markdown("### New run")
                policy = gr.Dropdown(
                    label="Policy", choices=ctx.registry.names("causal-lm"), value=DEFAULT_CHAT_MODEL, elem_id="ppo-policy"
                )
                prompts = gr.Dropdown(
                    label="Prompts",
                    info="a project's prompts, or type the path of a prompts file",
                    choices=prompt_choices(ctx),
                    allow_custom_value=True,
                    elem_id="ppo-prompts",
                )
                pickers = build_pickers(ctx, KIND, early_stop=True)
                choices = {"method": ["lora", "top_layers"], **LAUNCH_CHOICES}
                all_fields = {f.name for f in dataclasses.fields(PPORunConfig)}
                main = build_form(PPORunConfig, choices, skip=SPECIAL_FIELDS | (all_fields - set(MAIN_FIELDS)))
                with gr.Accordion("More settings", open=False):
                    more = build_form(PPORunConfig, choices, skip=SPECIAL_FIELDS | set(MAIN_FIELDS))
                launch_btn = gr.Button("Launch PPO run", variant="primary", elem_id="ppo-launch")
                with gr.Accordion("Config file and command", open=False):
                    yaml_box = gr.Code(language="yaml", interactive=False, elem_id="ppo-yaml")
                    command = gr.Markdown(elem_id="ppo-command")
            with gr.Column(scale=3):
                gr.Markdown("### Runs")
                monitor = build_monitor(ctx, KIND, CHARTS, METRICS)
                warnings_md = gr.Markdown(elem_id="ppo-warnings")
                samples = gr.DataFrame(label="Latest sample replies", interactive=False, wrap=True, elem_id="ppo-samples")

        fields = {**main, **more}
        inputs = {policy, prompts, *pickers.inputs, *fields.values()}

        def parts(values: dict) -> tuple:
            rewards, judge = pickers.specs(values)
            settings = {name: values[c] for name, c in fields.items()}
            settings["heldout_judge"] = judge
            return values[prompts], values[policy], rewards, settings

        def on_preview(values: dict, request: gr.Request):
            require(ctx.store, request, TRAIN)
            return preview(ctx, *parts(values))

        def on_launch(values: dict, request: gr.Request):
            require(ctx.store, request, TRAIN)
            run_id = launch(ctx, *parts(values), request)
            return gr.Dropdown(choices=[r.id for r in ctx.launcher.runs(KIND)], value=run_id)

        def on_tick(run_id, request: gr.Request):
            require(ctx.store, request, TRAIN)
            return samples_and_warnings(ctx, run_id)

        def on_refresh(request: gr.Request):
            # Checked on the server; annotators load the page too: nothing for them, and no error toast.
            if not allowed(current_user(ctx.store, request), TRAIN):
                return tuple(gr.skip() for _ in range(10))
            return (
                gr.update(choices=ctx.registry.names("causal-lm")),
                gr.update(choices=prompt_choices(ctx)),
                *pickers.refreshed(ctx),
                gr.update(choices=[r.id for r in ctx.launcher.runs(KIND)]),
                gr.Timer(active=True),
                gr.skip(),
            )

        def refresher(kind: str | None, projects: bool = False):
            def on_focus(request: gr.Request):
                require(ctx.store, request, TRAIN)
                return gr.update(choices=prompt_choices(ctx) if projects else ctx.registry.names(kind))

            return on_focus

        ordered = [policy, prompts, *pickers.inputs, *fields.values()]
        gr.on([c.change for c in ordered], on_preview, inputs, [yaml_box, command], api_name=False, show_progress="hidden")
        launch_btn.click(on_launch, inputs, monitor.run, api_name="launch_ppo_run")
        monitor.timer.tick(on_tick, monitor.run, [samples, warnings_md], api_name=False, show_progress="hidden")
        policy.focus(refresher("causal-lm"), None, policy, api_name=False)
        pickers.wire_focus(ctx)
        prompts.focus(refresher(None, projects=True), None, prompts, api_name=False)
        registered = [comp for comp, _ in pickers.registered]
        screen.load(on_refresh, None, [policy, prompts, *registered, monitor.run, monitor.timer, warnings_md], api_name=False)
    return screen


if __name__ == "__main__":
    from studio.app import standalone

    standalone(build)
