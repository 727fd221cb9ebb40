"""The "DPO" screen (L3, offline): tune a policy directly on the rankings, no reward model, no PPO.

Data: a snapshot (its chosen / rejected pairs) or any TRL / HH-RLHF preference file. trl's
DPOTrainer with LoRA; the reference is the policy with its adapters off. The result is
registered with a model card and shows in the chat. Admins only. Run alone: ``python -m studio.dpo_tab``.
"""

from __future__ import annotations

import gradio as gr

from rlhf.dpo import DPORunConfig
from studio.config_form import LAUNCH_CHOICES
from studio.context import StudioContext
from studio.reward_tab import data_choices
from studio.run_monitor import Chart
from studio.training_screen import Spec, build_screen

SPEC = Spec(
    kind="dpo",
    cfg_cls=DPORunConfig,
    intro="DPO learns from the same rankings as a reward model, in one offline step: the policy is pushed to prefer "
    "the chosen reply over the rejected one, relative to the reference (the policy with its adapters off).",
    data_field="data",
    data_label="Preference pairs",
    data_info="a snapshot, or type the path of a TRL or HH-RLHF preference file",
    data_choices=data_choices,
    export=None,
    model_field="policy",
    model_label="Policy",
    main_fields=("beta", "learning_rate", "epochs", "batch_size", "max_length", "max_prompt_tokens", "register_as"),
    choices={"loss_type": ["sigmoid", "ipo", "hinge"], **LAUNCH_CHOICES},
    charts=(Chart("Training loss", ("loss",)), Chart("Preference accuracy and margin", ("rewards/accuracies", "rewards/margins"))),
    metrics=("eval_accuracies_before", "eval_accuracies", "eval_margins", "judged_win_rate_vs_start"),
    launch_label="Launch DPO run",
)


def build(ctx: StudioContext) -> gr.Blocks:
    return build_screen(ctx, SPEC)


if __name__ == "__main__":
    from studio.app import standalone

    standalone(build)
