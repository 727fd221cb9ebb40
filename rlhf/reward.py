"""Reward-model training on preference pairs with trl's RewardTrainer.

    rlhf-studio train reward --config run.yaml          # or: python -m rlhf train reward ...

Input: a snapshot folder or any TRL-format / HH-RLHF preference file. Base: any registered
model (MiniLM by default; SmolLM2 works too). Pairs are tokenized here, truncated from the left
so the final reply survives; none are dropped (trl's own max_length filter would silently drop
long pairs). Full fine-tune or LoRA. A held-out split gives pairwise accuracy and mean margin,
split by annotator agreement when the snapshot carries it. The finished model is saved to the
run's ``checkpoint/`` and registered with its lineage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf import pooling
from rlhf.launch import LaunchFields, is_main_process
from rlhf.preference_data import Pair, read_split
from rlhf.scoring import RewardScorer, encode_pair


@dataclass
class RewardRunConfig(LaunchFields):
    data: str = field(default="", metadata={"help": "snapshot folder or preference file (TRL or HH-RLHF; .jsonl, .json, .parquet, .gz)"})
    base_model: str = field(default="minilm-l6", metadata={"help": "registered model name or local folder to start from"})
    method: str = field(default="full", metadata={"help": "full (every weight) or lora (adapters, merged at the end)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling"})
    learning_rate: float = field(default=5e-5, metadata={"help": "peak learning rate"})
    warmup_ratio: float = field(default=0.0, metadata={"help": "share of the steps spent warming the learning rate up from 0"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training pairs"})
    batch_size: int = field(default=16, metadata={"help": "pairs per step"})
    max_length: int = field(default=256, metadata={"help": "tokens per prompt + reply; longer texts lose their start"})
    pooling: str = field(default="mean", metadata={"help": "encoders: mean of the token vectors (sentence encoders) or cls"})
    eval_fraction: float = field(default=0.2, metadata={"help": "share of pairs held out for evaluation (ignored with eval_data)"})
    eval_data: str | None = field(default=None, metadata={"help": "a separate held-out pairs file (optional)"})
    skip_invalid: bool = field(
        default=False,
        metadata={"help": "leave out records that cannot be pairs (listed in the log with the reason) instead of refusing the file"},
    )
    seed: int = field(default=0, metadata={"help": "random seed (split, head initialisation, shuffling)"})
    logging_steps: int = field(default=5, metadata={"help": "log every N steps"})
    save_steps: int = field(default=50, metadata={"help": "save a resumable checkpoint every N steps"})
    register_as: str | None = field(default=None, metadata={"help": "registry name for the result (default: the run id)"})

    def __post_init__(self) -> None:
        self.check_launch()
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}")
        if self.method not in ("full", "lora"):
            raise ValueError(f"method must be 'full' or 'lora', got {self.method!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.batch_size < 1 or self.max_length < 8:
            raise ValueError("batch_size must be >= 1 and max_length >= 8")


def evaluate_pairs(scorer: RewardScorer, pairs: list[Pair]) -> dict:
    """Pairwise accuracy and mean margin (chosen score minus rejected), by agreement if known."""
    if not pairs:
        return {}
    chosen = scorer.score_batch([(p.prompt, p.chosen) for p in pairs])
    rejected = scorer.score_batch([(p.prompt, p.rejected) for p in pairs])
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    out = {"pairs": len(pairs), "accuracy": sum(m > 0 for m in margins) / len(pairs), "mean_margin": sum(margins) / len(pairs)}
    groups = {"unanimous": [m for m, p in zip(margins, pairs, strict=True) if p.agreement is not None and p.agreement >= 1.0]}
    groups["split"] = [m for m, p in zip(margins, pairs, strict=True) if p.agreement is not None and p.agreement < 1.0]
    for name, ms in groups.items():
        if ms:
            out[f"accuracy_{name}"] = sum(m > 0 for m in ms) / len(ms)
            out[f"pairs_{name}"] = len(ms)
    return out


def _lora_targets(model) -> list[str]:
    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    for candidates in (["query", "value"], ["q_proj", "v_proj"], ["c_attn"]):
        if all(c in names for c in candidates):
            return candidates
    raise ValueError("cannot pick LoRA target modules for this architecture; use method: full")


def train_reward(cfg: RewardRunConfig, run, stop, registry=None, resume: bool = False) -> dict:
    """Train, evaluate, save and register; returns the metrics (also in run/metrics.json)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from rlhf.registry import ModelRegistry
    from rlhf.results import publish, trainer_arguments
    from rlhf.runs import run_callback

    registry = registry or ModelRegistry()
    train_pairs, eval_pairs = read_split(cfg.data, cfg.eval_data, cfg.eval_fraction, cfg.seed, cfg.skip_invalid)
    folder = registry.resolve(cfg.base_model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token  # encoders end a pair with [SEP]; trl wants an end token
    torch.manual_seed(cfg.seed)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    pooling.apply(model, cfg.pooling)  # decoders always score their last token
    peft_config = None
    if cfg.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="SEQ_CLS", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=_lora_targets(model))

    def encode(batch: list[Pair]) -> Dataset:
        return Dataset.from_dict(
            {
                "chosen_ids": [encode_pair(tokenizer, p.prompt, p.chosen, cfg.max_length) for p in batch],
                "rejected_ids": [encode_pair(tokenizer, p.prompt, p.rejected, cfg.max_length) for p in batch],
            }
        )

    train_set = encode(train_pairs)
    args = RewardConfig(
        **trainer_arguments(run, cfg.seed, cfg.logging_steps, cfg.save_steps),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        max_length=None,  # already truncated above; trl would otherwise drop long pairs
        gradient_checkpointing=False,
    )
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[run_callback(run, stop)],
    )
    last = run.last_checkpoint() if resume else None
    trainer.train(resume_from_checkpoint=str(last) if last else None)

    if not is_main_process():
        return {}  # rank 0 saves, evaluates and registers
    final = trainer.model
    if cfg.method == "lora":
        final = final.merge_and_unload()
    final.save_pretrained(run.checkpoint_dir)
    tokenizer.save_pretrained(run.checkpoint_dir)
    from rlhf.scoring import write_format

    write_format(run.checkpoint_dir, cfg.max_length)  # every scorer reads its texts the same way
    scorer = RewardScorer(final, tokenizer, cfg.max_length)
    metrics = {
        "train_pairs": len(train_pairs),
        "dropped_pairs": 0,
        **{f"eval_{k}": v for k, v in evaluate_pairs(scorer, eval_pairs).items()},
    }
    lineage = {"data": cfg.data, "base_model": cfg.base_model, "method": cfg.method}
    return publish(
        run,
        registry,
        cfg,
        kind="reward",
        base=cfg.base_model,
        method=cfg.method,
        data=cfg.data,
        metrics=metrics,
        lineage=lineage,
        stop=stop,
        step=trainer.state.global_step,
    )
