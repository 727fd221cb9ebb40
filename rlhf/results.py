"""What every trainer shares: the transformers arguments for a run folder, and how a run ends.

    args = RewardConfig(**trainer_arguments(run, cfg.seed, cfg.logging_steps, cfg.save_steps), ...)
    metrics = publish(run, registry, cfg, kind="sft", base=cfg.base_model, method="SFT (lora)", ...)

``publish`` writes metrics.json and the final event, the model card, and registers the
checkpoint with its lineage unless the run was stopped early. Under ``accelerate launch`` only
the main process (rank 0) publishes: the others return the metrics untouched.
"""

from __future__ import annotations

from dataclasses import asdict


def trainer_arguments(run, seed: int, logging_steps: int, save_steps: int) -> dict:
    """Checkpoints in the run's trainer/ folder, events through our callback, CPU or CUDA as present."""
    import torch

    use_cuda = torch.cuda.is_available()
    return {
        "output_dir": str(run.trainer_dir),
        "logging_steps": logging_steps,
        "save_strategy": "steps",
        "save_steps": save_steps,
        "save_total_limit": 2,
        "eval_strategy": "no",
        "report_to": [],
        "bf16": use_cuda and torch.cuda.is_bf16_supported(),
        "use_cpu": not use_cuda,
        "disable_tqdm": True,
        "seed": seed,
        "dataloader_num_workers": 0,
    }


def training_cost(run) -> dict:
    """What the run cost: wall time since it started and the device it ran on (for the levels board)."""
    from datetime import UTC, datetime

    import torch

    cost: dict = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    started = run.status().get("started")
    if started:
        try:
            cost["train_seconds"] = round((datetime.now(UTC) - datetime.fromisoformat(started)).total_seconds(), 1)
        except ValueError:
            pass
    return cost


def publish(
    run,
    registry,
    cfg,
    *,
    kind: str,
    base: str,
    method: str,
    data: str,
    metrics: dict,
    lineage: dict,
    stop,
    step: int,
    ended_early: bool = False,
) -> dict:
    """Metrics, final event, model card; register the model unless the run was cancelled (``stop``).

    ``ended_early``: the trainer itself ended before its last step on purpose (PPO's early stop on
    its held-out judge); the model is registered and ``stopped_early`` says so.
    """
    from rlhf.launch import is_main_process
    from rlhf.model_card import write_card

    if not is_main_process():  # one run folder, one model card, one registry entry
        return metrics
    metrics["stopped_early"] = bool(stop) or ended_early
    metrics.update(training_cost(run))
    run.write_metrics(metrics)
    run.append_event({"step": step, "final": True, **metrics})
    write_card(run.checkpoint_dir, registry, base, method, data, asdict(cfg), metrics, kind, run.id)
    if not stop:
        entry = registry.add(
            run.checkpoint_dir,
            name=cfg.register_as or run.id,
            source=f"{kind} run {run.id}",
            lineage={"run": run.id, **lineage},
            replace="runs",  # an earlier run's model of this name, never one added by hand (checked before the run)
        )
        metrics["registered_as"] = entry.name
        run.write_metrics(metrics)
    return metrics
