"""The "KTO" screen (L3, offline): tune a policy on single replies marked good or bad, no pairs needed.

Data: a snapshot made with the KTO option (thumbs up/down from the chat, the prompt lab and
the arena, and rankings' top and bottom replies), a file of TRL prompt/completion/label
records, or a snapshot's preference pairs converted (chosen desirable, rejected undesirable).
trl's KTOTrainer with LoRA; the reference is the policy with its adapters off. The result is
registered with a model card and shows in the chat. Admins only. Run alone: ``python -m studio.kto_tab``.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from annotations.snapshot import list_snapshots
from rlhf.kto import KTORunConfig
from rlhf.kto_data import PAIRS_FILE, snapshot_kto_counts
from studio.config_form import LAUNCH_CHOICES
from studio.context import StudioContext
from studio.run_monitor import Chart
from studio.training_screen import Spec, build_screen


def data_choices(ctx: StudioContext) -> list[tuple[str, str]]:
    """Snapshots with KTO data first (newest first), then the others' preference pairs, converted, as (label, path)."""
    with_kto, pairs_only = [], []
    for snap in list_snapshots(ctx.store):
        counts = snapshot_kto_counts(Path(snap["folder"]))
        if counts is not None:
            with_kto.append((f"{snap['id']} · KTO: {counts[0]} desirable, {counts[1]} undesirable", snap["folder"]))
        elif (Path(snap["folder"]) / PAIRS_FILE).is_file():
            n = snap["counts"].get("pairs", 0)
            label = f"{snap['id']} · {n} pairs, converted (chosen = desirable, rejected = undesirable)"
            pairs_only.append((label, str(Path(snap["folder"]) / PAIRS_FILE)))
    return with_kto + pairs_only


SPEC = Spec(
    kind="kto",
    cfg_cls=KTORunConfig,
    intro="KTO learns from single replies marked good or bad, one click per reply instead of a full ranking. Thumbs up "
    "and down given in the chat, the prompt lab and the arena, and the rankings (top reply desirable, bottom undesirable), "
    "become KTO data through a snapshot made with the KTO option in the admin console. The policy is pushed toward the "
    "desirable replies and away from the undesirable ones, relative to the reference (the policy with its adapters off). "
    "A snapshot without KTO data can be used through its preference pairs, converted.",
    data_field="data",
    data_label="Replies marked good or bad",
    data_info="a snapshot with KTO data, a snapshot's pairs (converted), or type the path of a prompt/completion/label file",
    data_choices=data_choices,
    export=None,
    model_field="policy",
    model_label="Policy",
    main_fields=("beta", "balance_weights", "learning_rate", "epochs", "batch_size", "max_length", "max_prompt_tokens", "register_as"),
    choices={**LAUNCH_CHOICES},
    charts=(
        Chart("Training loss", ("loss",)),
        Chart("Rewards of desirable and undesirable replies", ("rewards/chosen", "rewards/rejected", "rewards/margins")),
        Chart("KL estimate", ("kl",)),
    ),
    metrics=("eval_logratio_gap_before", "eval_logratio_gap", "eval_rewards/margins", "eval_accuracy", "judged_win_rate_vs_start"),
    launch_label="Launch KTO run",
)


def build(ctx: StudioContext) -> gr.Blocks:
    return build_screen(ctx, SPEC)


if __name__ == "__main__":
    from studio.app import standalone

    standalone(build)
