"""A model card (README.md) for every checkpoint a run produces.

    write_card(run.checkpoint_dir, registry, base="smollm2-135m-instruct", method="lora", data=cfg.data,
               settings=config_to_dict(cfg), metrics=metrics, kind="sft", run_id=run.id)

The card's YAML front matter carries the base model's licence, so the registry shows it for the
checkpoint too, with a warning when that licence may not allow commercial use. The body says
what the model is, what it was trained on, how, and how it scored.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from rlhf.modelfiles import read_licence

WHAT = {
    "reward": "a reward model: scores (prompt, reply) pairs, higher is better",
    "ppo": "a policy tuned with PPO against reward sources",
    "sft": "an instruction-tuned causal LM (supervised fine-tuning)",
    "dpo": "a policy tuned with DPO on preference pairs",
    "kto": "a policy tuned with KTO on replies marked desirable or undesirable",
    "grpo": "a policy tuned with GRPO (group-relative advantages, no value model) against reward sources",
    "rloo": "a policy tuned with RLOO (leave-one-out baselines, no value model) against reward sources",
}


def base_licence(registry, base: str) -> tuple[str, str | None]:
    """(licence, warning or None) of the base model, a registered name or a folder."""
    try:
        entry = registry.get(base)
        return entry.licence, entry.commercial_use_warning
    except Exception:  # a folder path rather than a registered name
        from rlhf.registry import ModelEntry

        licence = read_licence(Path(base)) if Path(base).is_dir() else "unknown"
        probe = ModelEntry(name=base, kind="", source="", path=base, licence=licence)
        return licence, probe.commercial_use_warning


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def write_card(folder: Path, registry, base: str, method: str, data: str, settings: dict, metrics: dict, kind: str, run_id: str) -> Path:
    licence, warning = base_licence(registry, base)
    lines = [
        "---",
        f"license: {licence}",
        f"base_model: {base}",
        "tags: [rlhf-studio, " + kind + "]",
        "---",
        f"# {run_id}",
        "",
        f"This is {WHAT.get(kind, kind)}, made by RLHF Studio on {datetime.now(UTC):%Y-%m-%d}.",
        "",
        f"- **Base model**: `{base}` (licence: {licence})",
        f"- **Data**: `{data}`",
        f"- **Method**: {method}",
        f"- **Run**: `{run_id}`",
    ]
    if warning:
        lines += ["", f"> **Licence warning**: {warning}. This checkpoint inherits the base model's licence."]
    lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
    lines += ["", "## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in settings.items()]
    path = Path(folder) / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
