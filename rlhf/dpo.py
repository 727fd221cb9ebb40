"""DPO: tune a policy directly on preference pairs, the offline alternative to reward model + PPO.

    rlhf-studio train dpo --config run.yaml        # or: python -m rlhf train dpo ...

Input: a snapshot folder or any TRL / HH-RLHF preference file (``rlhf.preference_data``).
trl's DPOTrainer with LoRA: the reference is the same model with its adapters switched off,
so no second copy is loaded. Each pair is conversational (the prompt as the user's turn, the
replies as the assistant's) so the chat template formats it. Held-out preference accuracy
(the implicit reward of the chosen reply above the rejected one's) and margin are measured
before and after. The result is merged and registered like any causal LM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.launch import CheckFields, LaunchFields, is_main_process
from rlhf.preference_data import Pair, read_split, transcript_messages


@dataclass
class DPORunConfig(CheckFields, LaunchFields):
    data: str = field(default="", metadata={"help": "snapshot folder or preference file (TRL or HH-RLHF; .jsonl, .json, .parquet, .gz)"})
    policy: str = field(default="smollm2-135m-instruct", metadata={"help": "registered causal LM (or SFT checkpoint) to tune"})
    beta: float = field(default=0.1, metadata={"help": "strength of the pull toward the reference (higher = closer)"})
    loss_type: str = field(default="sigmoid", metadata={"help": "sigmoid (DPO), ipo or hinge"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling"})
    learning_rate: float = field(default=5e-5, metadata={"help": "peak learning rate"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training pairs"})
    batch_size: int = field(default=4, metadata={"help": "pairs per step"})
    max_length: int = field(default=512, metadata={"help": "tokens per prompt + reply; longer pairs lose the prompt's start"})
    eval_fraction: float = field(default=0.1, metadata={"help": "share of pairs held out (ignored with eval_data)"})
    eval_data: str | None = field(default=None, metadata={"help": "a separate held-out pairs file (optional)"})
    skip_invalid: bool = field(
        default=False,
        metadata={"help": "leave out records that cannot be pairs (listed in the log with the reason) instead of refusing the file"},
    )
    seed: int = field(default=0, metadata={"help": "random seed"})
    logging_steps: int = field(default=5, metadata={"help": "log every N steps"})
    save_steps: int = field(default=50, metadata={"help": "save a resumable checkpoint every N steps"})
    register_as: str | None = field(default=None, metadata={"help": "registry name for the result (default: the run id)"})

    def __post_init__(self) -> None:
        self.check_launch()
        self.check_end_check()
        if self.loss_type not in ("sigmoid", "ipo", "hinge"):
            raise ValueError(f"loss_type must be sigmoid, ipo or hinge, got {self.loss_type!r}")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")


def conversational(pairs: list[Pair]):
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                # a multi-turn HH prompt becomes its turns, so the chat template formats each one
                "prompt": transcript_messages(p.prompt),
                "chosen": [{"role": "assistant", "content": p.chosen}],
                "rejected": [{"role": "assistant", "content": p.rejected}],
            }
            for p in pairs
        ]
    )


def train_dpo(cfg: DPORunConfig, run, stop, registry=None, resume: bool = False) -> dict:
    """Train, evaluate, save, write the model card and register; returns the metrics."""
    import torch
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from rlhf.loading import load_causal_lm
    from rlhf.registry import ModelRegistry
    from rlhf.results import publish, trainer_arguments
    from rlhf.runs import run_callback

    registry = registry or ModelRegistry()
    train_pairs, eval_pairs = read_split(cfg.data, cfg.eval_data, cfg.eval_fraction, cfg.seed, cfg.skip_invalid)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_causal_lm(cfg.policy, registry, dtype=torch.float32)
    tokenizer.padding_side = "right"  # training batches; generation is not done here
    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    targets = [t for t in ("q_proj", "k_proj", "v_proj", "o_proj") if t in names] or None
    lora = LoraConfig(task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=targets)
    args = DPOConfig(
        **trainer_arguments(run, cfg.seed, cfg.logging_steps, cfg.save_steps),
        beta=cfg.beta,
        loss_type=[cfg.loss_type],
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        max_length=cfg.max_length,
        truncation_mode="keep_end",  # the replies, what is compared, survive
        gradient_checkpointing=False,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=None,  # with LoRA the reference is the model with its adapters off
        args=args,
        train_dataset=conversational(train_pairs),
        eval_dataset=conversational(eval_pairs) if eval_pairs else None,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[run_callback(run, stop)],
    )

    def held_out() -> dict:
        if not eval_pairs:
            return {}
        found = trainer.evaluate()
        return {
            k.replace("eval_rewards/", "eval_"): v
            for k, v in found.items()
            if k in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins")
        }

    before = held_out()
    if before:
        run.append_event({"step": 0, **before})
    last = run.last_checkpoint() if resume else None
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    after = held_out()
    if not is_main_process():
        return {}
    metrics: dict = {"train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs)}
    metrics["trainable_params"] = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    metrics.update({f"{k}_before": v for k, v in before.items()})
    metrics.update(after)
    final = trainer.model.merge_and_unload()
    final.save_pretrained(run.checkpoint_dir)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(run.checkpoint_dir)
    lineage = {"data": cfg.data, "policy": cfg.policy, "method": "dpo"}
    if cfg.check_judge and cfg.check_prompts and not stop:
        from rlhf.evaluation import end_of_run_check

        del final
        texts = list(dict.fromkeys(p.prompt for p in eval_pairs)) or list(dict.fromkeys(p.prompt for p in train_pairs))
        held_out = [transcript_messages(t) for t in texts]
        metrics.update(
            end_of_run_check(
                run, start=cfg.policy, prompts=held_out, judge=cfg.check_judge, count=cfg.check_prompts, lineage=lineage,
                max_new_tokens=192, seed=cfg.seed, registry=registry,
            )
        )  # fmt: skip
    return publish(
        run,
        registry,
        cfg,
        kind="dpo",
        base=cfg.policy,
        method=f"DPO (LoRA, beta {cfg.beta:g})",
        data=cfg.data,
        metrics=metrics,
        lineage=lineage,
        stop=stop,
        step=trainer.state.global_step,
    )
