"""Reward-model training on preference pairs with trl's RewardTrainer.

    rlhf-studio train reward --config run.yaml          # or: python -m rlhf train reward ...

Input: a snapshot folder or any TRL-format / HH-RLHF preference file. Base: any registered
model (MiniLM by default; SmolLM2 works too). Pairs are tokenized here, truncated from the left
so the final reply survives; none are dropped (trl's own max_length filter would silently drop
long pairs). Methods:

- ``full`` / ``lora``: trl's RewardTrainer, every weight or LoRA adapters (merged at the end);
- ``head``: the base stays frozen; it reads every text once and linear Bradley-Terry heads are
  fitted on what its classification head would read (:mod:`rlhf.features`). With ``heads`` > 1
  they are fitted on bootstrap resamples, so every score comes with an uncertainty (the heads'
  spread, :meth:`rlhf.scoring.RewardScorer.score_spread`) for PPO's uncertainty penalty and the
  annotation queue's active learning.

``prompt_format: chat`` reads a conversation the way a chat model was trained to (its chat
template), with the prompt's last turns within ``max_prompt_tokens``. A held-out split gives
pairwise accuracy and mean margin, split by annotator agreement when the snapshot carries it.
The finished model is saved to the run's ``checkpoint/`` and registered with its lineage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf import pooling
from rlhf.launch import LaunchFields, is_main_process
from rlhf.preference_data import Pair, read_split
from rlhf.scoring import PROMPT_FORMATS, RewardScorer, encode_pair


@dataclass
class RewardRunConfig(LaunchFields):
    data: str = field(default="", metadata={"help": "snapshot folder or preference file (TRL or HH-RLHF; .jsonl, .json, .parquet, .gz)"})
    base_model: str = field(default="smollm2-135m-instruct", metadata={"help": "registered model name or local folder to start from"})
    method: str = field(
        default="head",
        metadata={
            "help": "full (every weight), lora (adapters, merged at the end) or head (frozen base, linear heads fitted on its features)"
        },
    )
    heads: int = field(
        default=5, metadata={"help": "method head: heads fitted on bootstrap resamples; more than 1 gives each score an uncertainty"}
    )
    l2: float | None = field(
        default=None, metadata={"help": "method head: L2 strength of the heads (empty: picked by 4-fold CV on the training pairs)"}
    )
    prompt_format: str = field(
        default="chat", metadata={"help": "transcript (User:/Assistant: turns) or chat (the base's chat template; decoders)"}
    )
    max_prompt_tokens: int = field(
        default=128, metadata={"help": "keep the prompt's last turns within this many tokens (0 = all; chat format)"}
    )
    max_reply_tokens: int = field(
        default=128, metadata={"help": "read at most this many reply tokens, from its start (0 = all; chat format)"}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling"})
    learning_rate: float = field(default=5e-5, metadata={"help": "peak learning rate"})
    warmup_ratio: float = field(default=0.0, metadata={"help": "share of the steps spent warming the learning rate up from 0"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training pairs"})
    batch_size: int = field(default=16, metadata={"help": "pairs per step"})
    max_length: int = field(default=512, metadata={"help": "tokens per prompt + reply; longer texts lose their start"})
    pooling: str = field(
        default="auto",
        metadata={
            "help": "auto (encoders: mean; decoders: reply_mean with method head, else the last token), mean or cls (encoders), "
            "reply_mean (decoders with method head: the mean of the reply's token vectors)"
        },
    )
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
        if self.pooling not in ("auto", "mean", "cls", "reply_mean"):
            raise ValueError(f"pooling must be 'auto', 'mean', 'cls' or 'reply_mean', got {self.pooling!r}")
        if self.pooling == "reply_mean" and self.method != "head":
            raise ValueError("pooling reply_mean needs method head (the heads read the mean of the reply's token vectors)")
        if self.method not in ("full", "lora", "head"):
            raise ValueError(f"method must be 'full', 'lora' or 'head', got {self.method!r}")
        if self.heads < 1:
            raise ValueError(f"heads must be 1 or more (method head; other methods train one), got {self.heads}")
        if self.l2 is not None and self.l2 < 0:
            raise ValueError(f"l2 must be 0 or more, got {self.l2}")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}, got {self.prompt_format!r}")
        if self.max_prompt_tokens < 0 or self.max_reply_tokens < 0:
            raise ValueError("max_prompt_tokens and max_reply_tokens must be 0 (all) or more")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.batch_size < 1 or self.max_length < 8:
            raise ValueError("batch_size must be >= 1 and max_length >= 8")

    @property
    def reading(self) -> dict:
        """How texts are encoded (:func:`rlhf.scoring.encode_pair`), recorded beside the model."""
        return {"prompt_format": self.prompt_format, "max_prompt_tokens": self.max_prompt_tokens, "max_reply_tokens": self.max_reply_tokens}


def evaluate_pairs(scorer: RewardScorer, pairs: list[Pair]) -> dict:
    """Pairwise accuracy and mean margin (chosen score minus rejected), by agreement if known.

    An ensemble also reports how its uncertainty sorts the pairs: accuracy on the third it is
    surest of and on the third it is least sure of (a useful spread makes the first higher).
    """
    if not pairs:
        return {}
    import torch

    from rlhf.features import pair_accuracy
    from rlhf.uncertainty import pair_uncertainty

    heads = scorer.score_heads([(p.prompt, t) for p in pairs for t in (p.chosen, p.rejected)])
    chosen_heads, rejected_heads = heads[0::2], heads[1::2]
    margin_t = (chosen_heads - rejected_heads).mean(1)
    margins = margin_t.tolist()
    out = {"pairs": len(pairs), "accuracy": pair_accuracy(margin_t), "mean_margin": sum(margins) / len(pairs)}
    if scorer.heads > 1 and len(pairs) >= 3:
        order = pair_uncertainty(chosen_heads, rejected_heads).argsort()
        third = len(pairs) // 3
        out["accuracy_surest_third"] = pair_accuracy(margin_t[order[:third]])
        out["accuracy_least_sure_third"] = pair_accuracy(margin_t[order[-third:]])
        out["mean_spread"] = float(torch.cat([chosen_heads, rejected_heads]).std(1).mean())
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
    num_labels = cfg.heads if cfg.method == "head" else 1
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token  # encoders end a pair with [SEP]; trl wants an end token
    torch.manual_seed(cfg.seed)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=num_labels)
    model.config.pad_token_id = tokenizer.pad_token_id
    pooling.apply(model, "cls" if cfg.pooling == "cls" else "mean")  # encoders; decoders score their last token
    if cfg.method == "head":
        return _train_heads(cfg, run, stop, registry, model, tokenizer, train_pairs, eval_pairs)
    peft_config = None
    if cfg.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="SEQ_CLS", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=_lora_targets(model))

    def encode(batch: list[Pair]) -> Dataset:
        return Dataset.from_dict(
            {
                "chosen_ids": [encode_pair(tokenizer, p.prompt, p.chosen, cfg.max_length, **cfg.reading) for p in batch],
                "rejected_ids": [encode_pair(tokenizer, p.prompt, p.rejected, cfg.max_length, **cfg.reading) for p in batch],
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

    write_format(run.checkpoint_dir, cfg.max_length, **cfg.reading)  # every scorer reads its texts the same way
    scorer = RewardScorer(final, tokenizer, cfg.max_length, reading=cfg.reading)
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


def _train_heads(cfg: RewardRunConfig, run, stop, registry, model, tokenizer, train_pairs: list[Pair], eval_pairs: list[Pair]) -> dict:
    """method head: read every training text once with the frozen base, fit the heads, save.

    The heads become the classifier's weights (``heads`` outputs), so the saved model is an
    ordinary sequence-classification checkpoint; each head's mean training score is recorded
    as its offset so scores are centred on 0.
    """
    import time

    import torch

    from rlhf.features import FrozenFeatures, fit_heads
    from rlhf.results import publish
    from rlhf.scoring import write_format

    if not is_main_process():
        return {}  # one pass, no gradients to share: rank 0 does it all (the others would save the same files)
    reading = {"max_length": cfg.max_length, **cfg.reading}
    encoder = tokenizer.cls_token is not None and tokenizer.sep_token is not None
    if cfg.pooling == "reply_mean" and encoder:
        raise ValueError(f"pooling reply_mean is for decoders; {cfg.base_model} is an encoder (use pooling mean or auto)")
    pooled = "reply_mean" if not encoder and cfg.pooling in ("auto", "reply_mean") else "classifier"
    extractor = FrozenFeatures.of_classifier(model, tokenizer, reading, pooling=pooled)
    extractor.stop = stop
    start = time.perf_counter()
    texts = [(p.prompt, t) for p in train_pairs for t in (p.chosen, p.rejected)]
    features = torch.zeros(0)
    done = 0
    chunk = max(64, len(texts) // 20)  # about 20 progress events
    parts = []
    try:
        for at in range(0, len(texts), chunk):
            parts.append(extractor.features(texts[at : at + chunk]))
            done += len(texts[at : at + chunk])
            seconds = time.perf_counter() - start
            run.append_event(
                {"step": done, "max_steps": len(texts), "phase": "features", "texts_done": done, "texts_per_second": done / seconds}
            )
            print(f"features {done}/{len(texts)} texts, {done / seconds:.1f} texts/s", flush=True)
    except InterruptedError:
        pass
    if stop:  # stopped while reading: there is no model to save or register
        metrics = {"train_pairs": len(train_pairs), "texts_read": done, "stopped_early": True}
        run.write_metrics(metrics)
        run.append_event({"step": done, "final": True, **metrics})
        return metrics
    features = torch.cat(parts)
    fitted = fit_heads(features[0::2], features[1::2], cfg.heads, cfg.l2, cfg.seed)
    feature_seconds = time.perf_counter() - start
    head = model.score if hasattr(model, "score") else model.classifier
    with torch.no_grad():
        head.weight.copy_(fitted["weight"].to(head.weight))
        if head.bias is not None:
            head.bias.zero_()
    run.append_event({"step": len(texts), "phase": "heads", "heads": cfg.heads, "l2": fitted["l2"], "seconds": feature_seconds})
    model.save_pretrained(run.checkpoint_dir)
    tokenizer.save_pretrained(run.checkpoint_dir)
    offsets = [float(x) for x in fitted["offsets"]]
    write_format(run.checkpoint_dir, cfg.max_length, **cfg.reading, heads=cfg.heads, head_offsets=offsets, pooling=pooled)
    scorer = RewardScorer(model, tokenizer, cfg.max_length, extractor.device, cfg.reading, offsets, pooled)
    metrics = {
        "train_pairs": len(train_pairs),
        "dropped_pairs": 0,
        "heads": cfg.heads,
        "l2": fitted["l2"],
        "feature_seconds": round(feature_seconds, 1),
        **{f"eval_{k}": v for k, v in evaluate_pairs(scorer, eval_pairs).items()},
    }
    lineage = {"data": cfg.data, "base_model": cfg.base_model, "method": "head"}
    return publish(
        run, registry, cfg, kind="reward", base=cfg.base_model, method=f"head x{cfg.heads}", data=cfg.data,
        metrics=metrics, lineage=lineage, stop=stop, step=len(texts),
    )  # fmt: skip
