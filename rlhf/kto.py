"""KTO: tune a policy on single replies marked desirable or undesirable (thumbs up/down), no pairs needed.

    rlhf-studio train kto --config run.yaml        # or: python -m rlhf train kto ...

Input: a snapshot folder made with the KTO option, a file of TRL unpaired preference records
(prompt / completion / label), or a preference pairs file converted (``rlhf.kto_data``).
trl's KTOTrainer with LoRA: the reference is the same model with its adapters switched off, so
no second copy is loaded. Each example is conversational (the prompt as the user's turns, the
reply as the assistant's) so the chat template formats it. Held out before and after: the
log-ratio of policy to reference on desirable and on undesirable replies; their gap (and
trl's reward margin, beta times it) rises when the model moves toward the desirable replies.
The result is merged and registered like any causal LM.
"""

from __future__ import annotations

import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

from rlhf.kto_data import KTOExample, read_kto_split
from rlhf.launch import CheckFields, LaunchFields, init_distributed, is_main_process, world_size
from rlhf.preference_data import last_turns, transcript_messages


@dataclass
class KTORunConfig(CheckFields, LaunchFields):
    data: str = field(
        default="",
        metadata={
            "help": "snapshot folder with KTO data (thumbs up/down, rankings), a prompt/completion/label file (TRL's unpaired "
            "format; .jsonl, .json, .parquet, .gz), or a preference pairs file (chosen = desirable, rejected = undesirable)"
        },
    )
    policy: str = field(default="smollm2-135m-instruct", metadata={"help": "registered causal LM (or SFT checkpoint) to tune"})
    beta: float = field(default=0.1, metadata={"help": "strength of the pull toward the reference (higher = closer)"})
    desirable_weight: float = field(
        default=1.0,
        metadata={
            "help": "weight of the loss on desirable replies; when the two kinds are unequal in number, TRL advises weights with "
            "desirable_weight x desirable count / (undesirable_weight x undesirable count) between 1 and 4/3 (used when "
            "balance_weights is off)"
        },
    )
    undesirable_weight: float = field(
        default=1.0, metadata={"help": "weight of the loss on undesirable replies (used when balance_weights is off)"}
    )
    balance_weights: bool = field(
        default=True,
        metadata={
            "help": "set the two weights from the training counts (the smaller kind weighted larger / smaller, the other 1), "
            "as TRL advises for unequal kinds; logged in the run's first events"
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling"})
    learning_rate: float = field(default=5e-5, metadata={"help": "peak learning rate"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training examples"})
    batch_size: int = field(
        default=4, metadata={"help": "examples per step; at least 2 (KTO estimates its KL term from the other replies in the batch)"}
    )
    max_length: int = field(default=384, metadata={"help": "tokens per prompt + reply; a longer reply loses its end"})
    max_prompt_tokens: int = field(
        default=128,
        metadata={
            "help": "prompt tokens kept: the last turns that fit (earlier turns dropped whole, a long last turn loses its start); "
            "at most half of max_length when it would fill it"
        },
    )
    replies_only: bool = field(
        default=True, metadata={"help": "project only reply tokens through the LM head (same results; trl does it only with Triton)"}
    )
    eval_fraction: float = field(
        default=0.1, metadata={"help": "share of examples held out, whole prompts, both kinds (ignored with eval_data)"}
    )
    eval_data: str | None = field(default=None, metadata={"help": "a separate held-out file of KTO examples or pairs (optional)"})
    seed: int = field(default=0, metadata={"help": "random seed (the split and the order of the examples)"})
    logging_steps: int = field(default=5, metadata={"help": "log every N steps"})
    save_steps: int = field(default=50, metadata={"help": "save a resumable checkpoint every N steps"})
    register_as: str | None = field(default=None, metadata={"help": "registry name for the result (default: the run id)"})

    def __post_init__(self) -> None:
        self.check_launch()
        self.check_end_check()
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.desirable_weight <= 0 or self.undesirable_weight <= 0:
            raise ValueError(f"desirable_weight and undesirable_weight must be > 0, got {self.desirable_weight}, {self.undesirable_weight}")
        if self.batch_size < 2:
            raise ValueError(
                f"batch_size must be at least 2, got {self.batch_size}: KTO estimates its KL term from the other replies in the batch"
            )
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.max_prompt_tokens <= 0:
            raise ValueError(f"max_prompt_tokens must be > 0, got {self.max_prompt_tokens}")

    @property
    def prompt_budget(self) -> int:
        """The prompt tokens kept: max_prompt_tokens, or half of max_length when it would fill it (room for the reply)."""
        return self.max_prompt_tokens if self.max_prompt_tokens < self.max_length else max(1, self.max_length // 2)


def balanced_weights(desirable: int, undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight): the smaller kind weighted by larger / smaller count, the other 1.

    That puts desirable_weight x n_desirable / (undesirable_weight x n_undesirable) at 1, the lower end
    of the range [1, 4/3] that the KTO paper (eq. 8) and trl's warning recommend.
    """
    if desirable <= 0 or undesirable <= 0:
        return 1.0, 1.0
    if desirable < undesirable:
        return undesirable / desirable, 1.0
    return 1.0, desirable / undesirable


def conversational(examples: list[KTOExample], tokenizer=None, max_prompt_tokens: int = 0):
    """TRL's conversational unpaired preference dataset; each prompt cut to its last turns that fit."""
    from datasets import Dataset

    def prompt(text: str) -> list[dict]:
        turns = transcript_messages(text)
        return last_turns(turns, tokenizer, max_prompt_tokens) if tokenizer is not None and max_prompt_tokens else turns

    return Dataset.from_list(
        [
            {"prompt": prompt(ex.prompt), "completion": [{"role": "assistant", "content": ex.completion}], "label": ex.label}
            for ex in examples
        ]
    )


def _summary(ratios, labels, beta: float) -> dict:
    """Held-out figures from per-example log-ratios (policy over reference, summed over the reply) and labels."""
    good, bad = ratios[labels], ratios[~labels]
    right = ((ratios > 0) == labels) & (ratios != 0)
    d, u = float(good.mean()), float(bad.mean())
    return {
        "eval_logratio_desirable": d,
        "eval_logratio_undesirable": u,
        "eval_logratio_gap": d - u,
        "eval_rewards/chosen": beta * d,
        "eval_rewards/rejected": beta * u,
        "eval_rewards/margins": beta * (d - u),
        # ties (an unmoved model: every log-ratio 0) count half, so no movement reads 0.5
        "eval_accuracy": float(right.float().mean() + 0.5 * (ratios == 0).float().mean()),
    }


def _reply_logps(model, ids, attention, target):
    """Log-probability of each sequence's reply tokens (those whose target is not -100), via trl's fused LM head."""
    out = model(input_ids=ids, attention_mask=attention, labels=target, use_cache=False, fused_lm_head=True)
    return out.log_probs[:, -(ids.size(1) - 1) :].sum(dim=1).float()


def held_out_metrics(trainer, beta: float) -> dict:
    """The held-out log-ratios of desirable and undesirable replies, their gap, trl's reward margin, and accuracy.

    Two passes per batch (the policy, then the same model with its adapters off: the reference);
    trl's own evaluation adds two more for its KL estimate, which these figures do not need.
    """
    import torch

    model = trainer.model
    unwrapped = trainer.accelerator.unwrap_model(model)
    was_training = model.training
    model.eval()
    ratios, labels = [], []
    device = next(unwrapped.parameters()).device
    with torch.no_grad(), trainer.accelerator.autocast():
        for batch in trainer.get_eval_dataloader():
            ids, attention = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            target = ids.masked_fill(batch["completion_mask"].to(device) == 0, -100)

            policy = _reply_logps(model, ids, attention, target)
            with unwrapped.disable_adapter():
                reference = _reply_logps(model, ids, attention, target)
            ratios.append(trainer.accelerator.gather_for_metrics(policy - reference).cpu())
            # as integers: not every collective backend gathers bools
            labels.append(trainer.accelerator.gather_for_metrics(batch["label"].to(device).long()).cpu().bool())
    model.train(was_training)
    if not ratios:
        return {}
    return _summary(torch.cat(ratios), torch.cat(labels), beta)


def unmoved_metrics(eval_examples: list[KTOExample], beta: float) -> dict:
    """Held-out figures when the policy is the reference (a new adapter): every log-ratio 0."""
    import torch

    labels = torch.tensor([ex.label for ex in eval_examples], dtype=torch.bool)
    return _summary(torch.zeros(len(eval_examples)), labels, beta)


def train_kto(cfg: KTORunConfig, run, stop, registry=None, resume: bool = False) -> dict:
    """Train, evaluate, save, write the model card and register; returns the metrics."""
    import torch
    from peft import LoraConfig
    from trl import KTOConfig, KTOTrainer

    from rlhf.dpo import adapter_is_zero, replies_scored_only
    from rlhf.loading import load_causal_lm
    from rlhf.registry import ModelRegistry
    from rlhf.results import publish, trainer_arguments
    from rlhf.runs import run_callback

    registry = registry or ModelRegistry()
    train_examples, eval_examples = read_kto_split(cfg.data, cfg.eval_data, cfg.eval_fraction, cfg.seed)
    # trl's KTO reads batches in order (its KL estimate pairs each prompt with a neighbour's reply), so shuffle
    # here: a file sorted by label would otherwise give batches of one kind
    train_examples = list(train_examples)
    random.Random(cfg.seed).shuffle(train_examples)
    desirable = sum(ex.label for ex in train_examples)
    undesirable = len(train_examples) - desirable
    if cfg.balance_weights:
        weights = balanced_weights(desirable, undesirable)
        why = f"balanced by count ({desirable} desirable, {undesirable} undesirable)"
    else:
        weights = (cfg.desirable_weight, cfg.undesirable_weight)
        why = "as configured"
    print(f"loss weights: desirable {weights[0]:.3g}, undesirable {weights[1]:.3g} ({why})", flush=True)
    run.append_event(
        {"step": 0, "desirable_weight": weights[0], "undesirable_weight": weights[1], "weights_why": why, "train_desirable": desirable}
    )

    torch.manual_seed(cfg.seed)
    # several processes: each loads onto its own GPU (cuda:LOCAL_RANK), not all onto GPU 0
    model, tokenizer = load_causal_lm(cfg.policy, registry, device=init_distributed() if world_size() > 1 else None, dtype=torch.float32)
    tokenizer.padding_side = "right"  # training batches; generation is not done here
    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    targets = [t for t in ("q_proj", "k_proj", "v_proj", "o_proj") if t in names] or None
    lora = LoraConfig(task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=targets)
    args = KTOConfig(
        **trainer_arguments(run, cfg.seed, cfg.logging_steps, cfg.save_steps),
        beta=cfg.beta,
        desirable_weight=weights[0],
        undesirable_weight=weights[1],
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        max_length=cfg.max_length,
        gradient_checkpointing=False,
    )
    with replies_scored_only() if cfg.replies_only else nullcontext():
        started = time.perf_counter()
        trainer = KTOTrainer(
            model=model,
            ref_model=None,  # with LoRA the reference is the model with its adapters off
            args=args,
            train_dataset=conversational(train_examples, tokenizer, cfg.prompt_budget),
            eval_dataset=conversational(eval_examples, tokenizer, cfg.prompt_budget) if eval_examples else None,
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[run_callback(run, stop)],
        )
        run.append_event({"step": 0, "prepare_seconds": round(time.perf_counter() - started, 1)})

        def held_out() -> dict:
            return held_out_metrics(trainer, cfg.beta) if eval_examples else {}

        # a new adapter starts with LoRA's B at zero: the policy is the reference, every log-ratio 0, known without a pass
        before = unmoved_metrics(eval_examples, cfg.beta) if eval_examples and adapter_is_zero(trainer.model) else held_out()
        if before:
            run.append_event({"step": 0, **before})
        last = run.last_checkpoint() if resume else None
        trainer.train(resume_from_checkpoint=str(last) if last else None)
        after = held_out()
    if not is_main_process():
        return {}
    metrics: dict = {
        "train_examples": len(train_examples),
        "train_desirable": desirable,
        "train_undesirable": undesirable,
        "eval_examples": len(eval_examples),
        "desirable_weight": weights[0],
        "undesirable_weight": weights[1],
    }
    metrics["trainable_params"] = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    metrics.update({f"{k}_before": v for k, v in before.items()})
    metrics.update(after)
    final = trainer.model.merge_and_unload()
    final.save_pretrained(run.checkpoint_dir)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(run.checkpoint_dir)
    lineage = {"data": cfg.data, "policy": cfg.policy, "method": "kto"}
    if cfg.check_judge and cfg.check_prompts and not stop:
        from rlhf.evaluation import end_of_run_check

        del final
        texts = list(dict.fromkeys(ex.prompt for ex in eval_examples)) or list(dict.fromkeys(ex.prompt for ex in train_examples))
        metrics.update(
            end_of_run_check(
                run, start=cfg.policy, prompts=[transcript_messages(t) for t in texts], judge=cfg.check_judge,
                count=cfg.check_prompts, lineage=lineage, max_new_tokens=192, seed=cfg.seed, registry=registry,
            )
        )  # fmt: skip
    return publish(
        run,
        registry,
        cfg,
        kind="kto",
        base=cfg.policy,
        method=f"KTO (LoRA, beta {cfg.beta:g})",
        data=cfg.data,
        metrics=metrics,
        lineage=lineage,
        stop=stop,
        step=trainer.state.global_step,
    )
