"""The "GRPO / RLOO" screen: trl's online trainers against the studio's reward sources, one inner tab each.

Both tabs are built from the spec-driven training screen (``studio/training_screen.py``): the
prompts (a project of the store, exported to a file at launch, or a prompts file inside the data
folders), the policy, the reward sources with weights and an optional held-out judge (the same
pickers as PPO's, ``studio/reward_sources.py``), and the settings of
:class:`rlhf.online_rl.GRPORunConfig` / :class:`rlhf.online_rl.RLOORunConfig`. A run is
``rlhf-studio train grpo|rloo``; its charts are PPO's diagnostics (reward per source, KL, entropy,
length and end-of-turn rate), and PPO's reward-hacking warnings and the latest sample replies show
under them. The finished policy is registered and appears in the chat. Every handler checks the
caller may train. Run alone: ``python -m studio.online_tab``.
"""

from __future__ import annotations

import gradio as gr

from annotations.export import export_prompts
from rlhf.online_rl import GRPO_LOSSES, GRPO_SCALING, VLLM_CHOICES, GRPORunConfig, RLOORunConfig
from rlhf.ppo import warnings_for
from studio.config_form import LAUNCH_CHOICES
from studio.context import StudioContext
from studio.run_monitor import Chart
from studio.training_screen import Spec, build_screen

PROJECT_PREFIX = "project:"
CHARTS = (
    Chart("Reward (training batch, held-out)", ("reward_mean", "eval_reward")),
    Chart("KL to the reference (nats per reply)", ("kl", "eval_kl")),
    Chart("Entropy per token", ("entropy",)),
    Chart("Reply length (tokens) and end-of-turn rate", ("reply_length", "eos_rate")),
    Chart("Clip fraction and policy loss", ("clipfrac", "policy_loss")),
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
MAIN_FIELDS = ("steps", "num_generations", "batch_size", "max_new_tokens", "learning_rate", "beta", "register_as")


def prompt_choices(ctx: StudioContext) -> list[tuple[str, str]]:
    return [(f"project {p.name} ({ctx.store.count_prompts(p.id)} prompts)", PROJECT_PREFIX + p.name) for p in ctx.store.projects()]


def _spec(kind: str, cfg_cls: type, intro: str, main: tuple[str, ...], choices: dict) -> Spec:
    return Spec(
        kind=kind,
        cfg_cls=cfg_cls,
        intro=intro,
        data_field="prompts",
        data_label="Prompts",
        data_info="a project's prompts, or type the path of a prompts file",
        data_choices=prompt_choices,
        export=export_prompts,
        model_field="policy",
        model_label="Policy",
        main_fields=main,
        choices={**LAUNCH_CHOICES, "use_vllm": list(VLLM_CHOICES), **choices},
        charts=CHARTS,
        metrics=METRICS,
        launch_label=f"Launch {kind.upper()} run",
        rewards_field="rewards",
        judge_field="heldout_judge",
        warnings=warnings_for,
    )


GRPO_SPEC = _spec(
    "grpo",
    GRPORunConfig,
    "GRPO (trl) samples a group of replies per prompt and pushes the policy toward the replies that score above "
    "their group's mean; no value model. The reference is the policy with its LoRA adapters off.",
    (*MAIN_FIELDS[:-1], "loss_type", "scale_rewards", MAIN_FIELDS[-1]),
    {"loss_type": list(GRPO_LOSSES), "scale_rewards": list(GRPO_SCALING)},
)
RLOO_SPEC = _spec(
    "rloo",
    RLOORunConfig,
    "RLOO (trl) samples several replies per prompt and scores each against the mean of the others (leave one out); "
    "the KL to the reference (the policy with its adapters off) is taken from the reward.",
    MAIN_FIELDS,
    {},
)


def build(ctx: StudioContext) -> gr.Blocks:
    with gr.Blocks() as screen:
        with gr.Tabs():
            with gr.Tab("GRPO", id="grpo"):
                build_screen(ctx, GRPO_SPEC)
            with gr.Tab("RLOO", id="rloo"):
                build_screen(ctx, RLOO_SPEC)
    return screen


if __name__ == "__main__":
    from studio.app import standalone

    standalone(build)
