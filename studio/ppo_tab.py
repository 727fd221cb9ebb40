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
from rlhf.modelfiles import ModelError
from rlhf.ppo import PPORunConfig, warnings_for
from rlhf.registry import DEFAULT_CHAT_MODEL
from rlhf.rewards import DEFAULT_JUDGE_TEMPLATE
from studio.config_form import build_form, confine_config, confine_paths, form_config, not_ready, prompts_file
from studio.context import StudioContext
from studio.permissions import TRAIN, allowed, current_user, data_path, require
from studio.render import UserError
from studio.run_monitor import Chart, build_monitor

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


def reward_specs(
    reward_model: str | None,
    reward_model_weight: float | None,
    judge: str | None,
    judge_weight: float | None,
    judge_template: str | None,
    function: str | None,
    function_weight: float | None,
    similarity: str | None,
    similarity_weight: float | None,
    reward_model_uncertainty: float | None = 0.0,
) -> list[dict]:
    """The ``rewards`` list from the form: every source that is chosen and has a non-zero weight.

    ``reward_model_uncertainty`` (k > 0): the reward model, an ensemble, pays its heads' mean less
    k standard deviations of their spread."""
    specs: list[dict] = []
    if reward_model and reward_model_weight:
        spec = {"type": "model", "model": reward_model, "weight": float(reward_model_weight)}
        if reward_model_uncertainty:
            spec["uncertainty"] = float(reward_model_uncertainty)
        specs.append(spec)
    if judge and judge_weight:
        spec = {"type": "judge", "model": judge, "weight": float(judge_weight)}
        if judge_template and judge_template.strip() != DEFAULT_JUDGE_TEMPLATE:
            spec["template"] = judge_template
        specs.append(spec)
    if function and function.strip() and function_weight:
        specs.append({"type": "function", "function": function.strip(), "weight": float(function_weight)})
    if similarity and similarity_weight:
        specs.append({"type": "similarity", "model": similarity, "weight": float(similarity_weight)})
    return specs


def judge_specs(reward_model: str | None, judge: str | None, function: str | None) -> list[dict]:
    """The ``heldout_judge`` list from the form: every source chosen, each with weight 1."""
    specs: list[dict] = []
    if reward_model:
        specs.append({"type": "model", "model": reward_model, "weight": 1.0})
    if judge:
        specs.append({"type": "judge", "model": judge, "weight": 1.0})
    if function and function.strip():
        specs.append({"type": "function", "function": function.strip(), "weight": 1.0})
    return specs


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
    command = f"rlhf-studio train ppo --config run.yaml --runs-dir {ctx.launcher.root}"
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
    empty = pd.DataFrame(columns=["step", "prompt", "reply", "reward", "ended"])
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
    found = warnings_for(events, cfg.get("target_kl"), cfg.get("max_new_tokens"))
    text = "\n".join(f"- ⚠️ {w}" for w in found)
    return (pd.DataFrame(rows, columns=empty.columns) if rows else empty), (f"**Warnings**\n\n{text}" if text else "")


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
                with gr.Group():
                    gr.Markdown("**Reward sources** (weighted sum; a weight of 0 leaves a source out)")
                    with gr.Row():
                        rm = gr.Dropdown(
                            label="Reward model", choices=ctx.registry.names("reward-model"), value=None, elem_id="ppo-rm", scale=3
                        )
                        rm_w = gr.Number(label="weight", value=1.0, elem_id="ppo-rm-weight", scale=1)
                        rm_unc = gr.Number(
                            label="uncertainty penalty",
                            info="ensembles: pay mean - k x the heads' spread",
                            value=0.0,
                            minimum=0,
                            elem_id="ppo-rm-uncertainty",
                            scale=1,
                        )
                    with gr.Row():
                        judge = gr.Dropdown(
                            label="AI judge (RLAIF)", choices=ctx.registry.names("causal-lm"), value=None, elem_id="ppo-judge", scale=3
                        )
                        judge_w = gr.Number(label="weight", value=1.0, elem_id="ppo-judge-weight", scale=1)
                    judge_template = gr.Textbox(label="Judge prompt ({prompt}, {reply})", value=DEFAULT_JUDGE_TEMPLATE, lines=3)
                    with gr.Row():
                        fn = gr.Textbox(label="Python function", placeholder="package.module:function", elem_id="ppo-fn", scale=3)
                        fn_w = gr.Number(label="weight", value=1.0, elem_id="ppo-fn-weight", scale=1)
                    with gr.Row():
                        sim = gr.Dropdown(
                            label="Similarity to reference answers",
                            choices=ctx.registry.names("encoder"),
                            value=None,
                            elem_id="ppo-sim",
                            scale=3,
                        )
                        sim_w = gr.Number(label="weight", value=1.0, elem_id="ppo-sim-weight", scale=1)
                with gr.Group():
                    gr.Markdown(
                        "**Held-out judge** (optional): a source the policy is *not* trained on, e.g. a reward model trained "
                        "on other pairs. It scores the held-out replies at every evaluation (eval_judge), shows when the "
                        "training reward is over-optimised, and lets early_stop_patience stop at its best."
                    )
                    with gr.Row():
                        hj_rm = gr.Dropdown(
                            label="Judge: reward model", choices=ctx.registry.names("reward-model"), value=None, elem_id="ppo-heldout-rm"
                        )
                        hj_judge = gr.Dropdown(
                            label="Judge: AI judge", choices=ctx.registry.names("causal-lm"), value=None, elem_id="ppo-heldout-judge"
                        )
                    hj_fn = gr.Textbox(label="Judge: Python function", placeholder="package.module:function", elem_id="ppo-heldout-fn")
                choices = {"method": ["lora", "top_layers"], "launcher": ["python", "accelerate"]}
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
        reward_inputs = [rm, rm_w, judge, judge_w, judge_template, fn, fn_w, sim, sim_w, rm_unc]
        judge_inputs = [hj_rm, hj_judge, hj_fn]
        inputs = {policy, prompts, *reward_inputs, *judge_inputs, *fields.values()}

        def parts(values: dict) -> tuple:
            rewards = reward_specs(*(values[c] for c in reward_inputs))
            settings = {name: values[c] for name, c in fields.items()}
            settings["heldout_judge"] = judge_specs(*(values[c] for c in judge_inputs))
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
            lm, rms = ctx.registry.names("causal-lm"), ctx.registry.names("reward-model")
            return (
                gr.update(choices=lm),
                gr.update(choices=prompt_choices(ctx)),
                gr.update(choices=rms),
                gr.update(choices=lm),
                gr.update(choices=ctx.registry.names("encoder")),
                gr.update(choices=rms),
                gr.update(choices=lm),
                gr.update(choices=[r.id for r in ctx.launcher.runs(KIND)]),
                gr.Timer(active=True),
                gr.skip(),
            )

        def refresher(kind: str | None, projects: bool = False):
            def on_focus(request: gr.Request):
                require(ctx.store, request, TRAIN)
                return gr.update(choices=prompt_choices(ctx) if projects else ctx.registry.names(kind))

            return on_focus

        ordered = [policy, prompts, *reward_inputs, *judge_inputs, *fields.values()]
        gr.on([c.change for c in ordered], on_preview, inputs, [yaml_box, command], api_name=False, show_progress="hidden")
        launch_btn.click(on_launch, inputs, monitor.run, api_name="launch_ppo_run")
        monitor.timer.tick(on_tick, monitor.run, [samples, warnings_md], api_name=False, show_progress="hidden")
        for comp, kind in (
            (policy, "causal-lm"),
            (rm, "reward-model"),
            (judge, "causal-lm"),
            (sim, "encoder"),
            (hj_rm, "reward-model"),
            (hj_judge, "causal-lm"),
        ):
            comp.focus(refresher(kind), None, comp, api_name=False)
        prompts.focus(refresher(None, projects=True), None, prompts, api_name=False)
        screen.load(
            on_refresh, None, [policy, prompts, rm, judge, sim, hj_rm, hj_judge, monitor.run, monitor.timer, warnings_md], api_name=False
        )
    return screen


if __name__ == "__main__":
    from studio.app import standalone

    standalone(build)
