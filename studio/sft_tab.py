"""The "Instruction tuning" screen (L2): supervised fine-tuning with LoRA, prefix / prompt tuning, IA3 or full.

Data: an instruction file (dolly-15k, alpaca, conversations, prompt/response) or a project of
the store, whose ranked prompts are exported with their best reply. The finished checkpoint is
registered with a model card: it appears in the chat, in candidate generation and as a PPO
policy. Admins only. Run alone: ``python -m studio.sft_tab``.
"""

from __future__ import annotations

import gradio as gr

from annotations.export import export_best_replies
from rlhf.sft import METHODS, SFTRunConfig
from studio.config_form import LAUNCH_CHOICES
from studio.context import StudioContext
from studio.run_monitor import Chart
from studio.training_screen import Spec, build_screen, project_choices

SPEC = Spec(
    kind="sft",
    cfg_cls=SFTRunConfig,
    intro="Instruction-tune a model on examples of the replies you want. Only the reply's tokens count in the loss; "
    "parameter-efficient methods train a small fraction of the weights.",
    data_field="data",
    data_label="Instruction data",
    data_info="a project (its ranked prompts with their best reply), or type the path of a dolly / alpaca / conversation file",
    data_choices=lambda ctx: project_choices(ctx, "best-ranked replies"),
    export=export_best_replies,
    model_field="base_model",
    model_label="Base model",
    main_fields=("method", "learning_rate", "epochs", "batch_size", "max_length", "register_as"),
    choices={"method": list(METHODS), **LAUNCH_CHOICES},
    charts=(Chart("Training loss", ("loss",)), Chart("Held-out loss", ("eval_loss",)), Chart("Held-out perplexity", ("eval_perplexity",))),
    metrics=("eval_loss_before", "eval_loss", "eval_perplexity", "trainable_params"),
    launch_label="Launch SFT run",
)


def build(ctx: StudioContext) -> gr.Blocks:
    return build_screen(ctx, SPEC)


if __name__ == "__main__":
    from studio.app import standalone

    standalone(build)
