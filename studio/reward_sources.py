"""Reward-source pickers shared by the screens that train against rewards (PPO, GRPO, RLOO).

The form offers each kind of source of ``rlhf.rewards`` with a weight: a trained reward model
(with an uncertainty penalty for ensembles), an AI judge (RLAIF) with its prompt, a Python
function and similarity to reference answers; and, apart from them, a held-out judge the policy
is not trained on. :func:`reward_specs` and :func:`judge_specs` turn the form's values into the
config's ``rewards`` and ``heldout_judge`` lists; :func:`build_pickers` lays the components out
(inside a screen's ``gr.Blocks``) and returns them with the handlers that refresh their choices.

    pickers = build_pickers(ctx, "ppo")             # elem ids ppo-rm, ppo-judge, ppo-heldout-rm, ...
    rewards, judge = pickers.specs(values)          # values: the event's {component: value}
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from rlhf.rewards import DEFAULT_JUDGE_TEMPLATE
from studio.context import StudioContext
from studio.permissions import TRAIN, require


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


def source_models(specs: list[dict]) -> list[str]:
    """The registered models a ``rewards`` or ``heldout_judge`` list names (functions name none)."""
    return [s["model"] for s in specs if isinstance(s, dict) and isinstance(s.get("model"), str)]


@dataclass
class Pickers:
    """The reward-source and held-out judge components of one screen."""

    rewards: list[gr.components.Component]  # in reward_specs' argument order
    judge: list[gr.components.Component]  # in judge_specs' argument order
    registered: list[tuple[gr.Dropdown, str]]  # (dropdown, registry kind) whose choices are the registry's models

    @property
    def inputs(self) -> list[gr.components.Component]:
        return [*self.rewards, *self.judge]

    def specs(self, values: dict) -> tuple[list[dict], list[dict]]:
        """(rewards, heldout_judge) from an event's {component: value} mapping."""
        return reward_specs(*(values[c] for c in self.rewards)), judge_specs(*(values[c] for c in self.judge))

    def refreshed(self, ctx: StudioContext) -> list:
        """Fresh choices for every registry dropdown, in ``registered`` order (the caller checked the role)."""
        return [gr.update(choices=ctx.registry.names(kind)) for _, kind in self.registered]

    def wire_focus(self, ctx: StudioContext) -> None:
        """Each registry dropdown lists the registry's models again when it gets the focus (admins only)."""

        def refresher(kind: str):
            def on_focus(request: gr.Request):
                require(ctx.store, request, TRAIN)
                return gr.update(choices=ctx.registry.names(kind))

            return on_focus

        for comp, kind in self.registered:
            comp.focus(refresher(kind), None, comp, api_name=False)


def build_pickers(ctx: StudioContext, prefix: str, early_stop: bool = False) -> Pickers:
    """Lay out the reward sources (weighted sum) and the held-out judge; elem ids start with ``prefix``.

    ``early_stop``: the config can stop at the judge's best (PPO's early_stop_patience), and the note says so."""
    lm, rms = ctx.registry.names("causal-lm"), ctx.registry.names("reward-model")
    with gr.Group():
        gr.Markdown("**Reward sources** (weighted sum; a weight of 0 leaves a source out)")
        with gr.Row():
            rm = gr.Dropdown(label="Reward model", choices=rms, value=None, elem_id=f"{prefix}-rm", scale=3)
            rm_w = gr.Number(label="weight", value=1.0, elem_id=f"{prefix}-rm-weight", scale=1)
            rm_unc = gr.Number(
                label="uncertainty penalty",
                info="ensembles: pay mean - k x the heads' spread",
                value=0.0,
                minimum=0,
                elem_id=f"{prefix}-rm-uncertainty",
                scale=1,
            )
        with gr.Row():
            judge = gr.Dropdown(label="AI judge (RLAIF)", choices=lm, value=None, elem_id=f"{prefix}-judge", scale=3)
            judge_w = gr.Number(label="weight", value=1.0, elem_id=f"{prefix}-judge-weight", scale=1)
        judge_template = gr.Textbox(label="Judge prompt ({prompt}, {reply})", value=DEFAULT_JUDGE_TEMPLATE, lines=3)
        with gr.Row():
            fn = gr.Textbox(label="Python function", placeholder="package.module:function", elem_id=f"{prefix}-fn", scale=3)
            fn_w = gr.Number(label="weight", value=1.0, elem_id=f"{prefix}-fn-weight", scale=1)
        with gr.Row():
            sim = gr.Dropdown(
                label="Similarity to reference answers",
                choices=ctx.registry.names("encoder"),
                value=None,
                elem_id=f"{prefix}-sim",
                scale=3,
            )
            sim_w = gr.Number(label="weight", value=1.0, elem_id=f"{prefix}-sim-weight", scale=1)
    with gr.Group():
        gr.Markdown(
            "**Held-out judge** (optional): a source the policy is *not* trained on, e.g. a reward model trained "
            "on other pairs. It scores the held-out replies at every evaluation (eval_judge)"
            + (
                ", shows when the training reward is over-optimised, and lets early_stop_patience stop at its best."
                if early_stop
                else " and shows when the training reward is over-optimised."
            )
        )
        with gr.Row():
            hj_rm = gr.Dropdown(label="Judge: reward model", choices=rms, value=None, elem_id=f"{prefix}-heldout-rm")
            hj_judge = gr.Dropdown(label="Judge: AI judge", choices=lm, value=None, elem_id=f"{prefix}-heldout-judge")
        hj_fn = gr.Textbox(label="Judge: Python function", placeholder="package.module:function", elem_id=f"{prefix}-heldout-fn")
    return Pickers(
        rewards=[rm, rm_w, judge, judge_w, judge_template, fn, fn_w, sim, sim_w, rm_unc],
        judge=[hj_rm, hj_judge, hj_fn],
        registered=[(rm, "reward-model"), (judge, "causal-lm"), (sim, "encoder"), (hj_rm, "reward-model"), (hj_judge, "causal-lm")],
    )
