"""Supervised fine-tuning (L2 instruction tuning) with parameter-efficient methods.

    rlhf-studio train sft --config run.yaml        # or: python -m rlhf train sft ...

Data: dolly-15k, alpaca, conversation or prompt/response files (``rlhf.instruction_data``).
Each example is formatted with the model's chat template; the loss counts only the reply's
tokens (the prompt's labels are -100). Methods: ``lora``, ``prefix`` (prefix tuning),
``prompt`` (prompt tuning), ``ia3``, or ``full``. A held-out split gives loss and perplexity
before and after. LoRA, IA3 and full results are saved as plain models (LoRA and IA3 merged),
so they chat, generate candidates and start PPO runs like any model; prefix and prompt tuning
are saved as adapters over the base (they cannot be merged).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from rlhf.instruction_data import Example, read_examples
from rlhf.launch import LaunchFields, init_distributed, is_main_process, world_size

METHODS = ("lora", "prefix", "prompt", "ia3", "full")


@dataclass
class SFTRunConfig(LaunchFields):
    data: str = field(
        default="", metadata={"help": "instruction file: dolly, alpaca, conversations or prompt/response (.jsonl/.json/.csv/.parquet)"}
    )
    base_model: str = field(default="smollm2-135m-instruct", metadata={"help": "registered causal LM or local folder to tune"})
    method: str = field(default="lora", metadata={"help": "lora, prefix (prefix tuning), prompt (prompt tuning), ia3 or full"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    num_virtual_tokens: int = field(default=16, metadata={"help": "prefix / prompt tuning: learned virtual tokens"})
    prompt_init_text: str | None = field(default=None, metadata={"help": "prompt tuning: start the virtual tokens from this text"})
    learning_rate: float = field(default=2e-4, metadata={"help": "peak learning rate (full fine-tune: use ~1e-5)"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training examples"})
    batch_size: int = field(default=8, metadata={"help": "examples per step"})
    max_length: int = field(default=512, metadata={"help": "tokens per example; long prompts lose their start, the reply is kept"})
    system: str | None = field(default=None, metadata={"help": "system prompt added to every example"})
    eval_fraction: float = field(default=0.1, metadata={"help": "share of examples held out (ignored with eval_data)"})
    eval_data: str | None = field(default=None, metadata={"help": "a separate held-out file (optional)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    logging_steps: int = field(default=5, metadata={"help": "log every N steps"})
    save_steps: int = field(default=50, metadata={"help": "save a resumable checkpoint every N steps"})
    register_as: str | None = field(default=None, metadata={"help": "registry name for the result (default: the run id)"})

    def __post_init__(self) -> None:
        self.check_launch()
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.batch_size < 1 or self.max_length < 16 or self.num_virtual_tokens < 1:
            raise ValueError("batch_size and num_virtual_tokens must be >= 1 and max_length >= 16")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")


def encode_example(tokenizer, example: Example, max_length: int, system: str | None = None) -> dict:
    """input_ids and labels (-100 outside the reply) through the chat template.

    Too long: the prompt loses its start first (its opening tokens of the template stay out
    of the labels anyway), then the reply its end.
    """
    messages = list(example.messages)
    if system and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}, *messages]
    if getattr(tokenizer, "chat_template", None):
        prompt_text = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        full_text = tokenizer.apply_chat_template(messages, tokenize=False)
        special = False
    else:
        prompt_text = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages[:-1]) + "\n\nAssistant:"
        full_text = prompt_text + " " + messages[-1]["content"] + (tokenizer.eos_token or "")
        special = True
    prompt_ids = tokenizer(prompt_text, add_special_tokens=special)["input_ids"]
    full_ids = tokenizer(full_text, add_special_tokens=special)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:  # a template that re-tokenises across the boundary
        reply_ids = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
    else:
        reply_ids = full_ids[len(prompt_ids) :]
    room = max_length - len(reply_ids)
    if room < 1:
        prompt_ids, reply_ids = prompt_ids[-1:], reply_ids[: max_length - 1]
    elif len(prompt_ids) > room:
        prompt_ids = prompt_ids[-room:]
    return {"input_ids": prompt_ids + reply_ids, "labels": [-100] * len(prompt_ids) + reply_ids}


def _collate(pad_id: int):
    import torch

    def collate(rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        ids = [r["input_ids"] + [pad_id] * (width - len(r["input_ids"])) for r in rows]
        labels = [r["labels"] + [-100] * (width - len(r["labels"])) for r in rows]
        mask = [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}

    return collate


def peft_config_for(cfg: SFTRunConfig, model, folder: Path):
    """The PEFT config of the chosen method (None for a full fine-tune)."""
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, TaskType

    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    attn = [t for t in ("q_proj", "k_proj", "v_proj", "o_proj") if t in names]
    if cfg.method == "lora":
        return LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=attn or None,
        )
    if cfg.method == "ia3":
        ff = [t for t in ("down_proj",) if t in names]
        targets = [t for t in ("k_proj", "v_proj") if t in names] + ff
        return IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=targets or None, feedforward_modules=ff or None)
    if cfg.method == "prefix":
        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.num_virtual_tokens)
    if cfg.method == "prompt":
        init = {"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": cfg.prompt_init_text, "tokenizer_name_or_path": str(folder)}
        return PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.num_virtual_tokens, **(init if cfg.prompt_init_text else {})
        )
    return None


def split_examples(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = int(round(len(examples) * fraction))
    return [examples[i] for i in order[n_eval:]], [examples[i] for i in order[:n_eval]]


def train_sft(cfg: SFTRunConfig, run, stop, registry=None, resume: bool = False) -> dict:
    """Train, evaluate, save, write the model card and register; returns the metrics."""
    import torch
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from rlhf.loading import load_causal_lm
    from rlhf.registry import ModelRegistry
    from rlhf.results import publish, trainer_arguments
    from rlhf.runs import run_callback

    registry = registry or ModelRegistry()
    if not cfg.data:
        raise ValueError("the config needs 'data': an instruction file")
    examples = read_examples(Path(cfg.data))
    if cfg.eval_data:
        train_ex, eval_ex = examples, read_examples(Path(cfg.eval_data))
    else:
        train_ex, eval_ex = split_examples(examples, cfg.eval_fraction, cfg.seed)
    folder = registry.resolve(cfg.base_model)
    torch.manual_seed(cfg.seed)
    # several processes: each loads onto its own GPU (cuda:LOCAL_RANK), not all onto GPU 0
    device = init_distributed() if world_size() > 1 else None
    model, tokenizer = load_causal_lm(cfg.base_model, registry, device=device, dtype=torch.float32)
    model.train()
    peft_config = peft_config_for(cfg, model, folder)
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def encode(batch: list[Example]) -> Dataset:
        rows = [encode_example(tokenizer, ex, cfg.max_length, cfg.system) for ex in batch]
        return Dataset.from_list(rows)

    train_set, eval_set = encode(train_ex), (encode(eval_ex) if eval_ex else None)
    args = TrainingArguments(
        **trainer_arguments(run, cfg.seed, cfg.logging_steps, cfg.save_steps),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        remove_unused_columns=False,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        data_collator=_collate(tokenizer.pad_token_id),
        callbacks=[run_callback(run, stop)],
    )
    before = trainer.evaluate(eval_set)["eval_loss"] if eval_set is not None else None
    if before is not None:
        run.append_event({"step": 0, "eval_loss": before, "eval_perplexity": math.exp(min(before, 50))})
    last = run.last_checkpoint() if resume else None
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    after = trainer.evaluate(eval_set)["eval_loss"] if eval_set is not None else None
    if not is_main_process():
        return {}

    metrics: dict = {"train_examples": len(train_ex), "eval_examples": len(eval_ex), "trainable_params": trainable}
    if before is not None and after is not None:
        metrics.update(
            eval_loss_before=before,
            eval_loss=after,
            eval_perplexity_before=math.exp(min(before, 50)),
            eval_perplexity=math.exp(min(after, 50)),
        )
    final = trainer.model
    if cfg.method in ("lora", "ia3"):
        final = final.merge_and_unload()
    final.save_pretrained(run.checkpoint_dir)
    tokenizer.save_pretrained(run.checkpoint_dir)
    if cfg.method in ("prefix", "prompt"):  # the adapter must find its base offline
        import json

        adapter_cfg = run.checkpoint_dir / "adapter_config.json"
        data = json.loads(adapter_cfg.read_text())
        data["base_model_name_or_path"] = str(folder)
        adapter_cfg.write_text(json.dumps(data, indent=2))
    lineage = {"data": cfg.data, "base_model": cfg.base_model, "method": cfg.method}
    return publish(
        run,
        registry,
        cfg,
        kind="sft",
        base=cfg.base_model,
        method=f"SFT ({cfg.method})",
        data=cfg.data,
        metrics=metrics,
        lineage=lineage,
        stop=stop,
        step=trainer.state.global_step,
    )
