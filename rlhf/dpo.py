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

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

from rlhf.launch import CheckFields, LaunchFields, init_distributed, is_main_process, world_size
from rlhf.preference_data import Pair, last_turns, read_split, transcript_messages


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
    max_length: int = field(default=384, metadata={"help": "tokens per prompt + reply; a longer reply loses its end"})
    max_prompt_tokens: int = field(
        default=128,
        metadata={
            "help": "prompt tokens kept: the last turns that fit (earlier turns dropped whole, a long last turn loses its start); "
            "at most half of max_length when it would fill it"
        },
    )
    lora_layers: int = field(
        default=0, metadata={"help": "LoRA on the top N layers only (0 = every layer); fewer is faster (backward stops there)"}
    )
    group_by_length: bool = field(default=True, metadata={"help": "batch pairs of similar length together (less padding)"})
    replies_only: bool = field(
        default=True, metadata={"help": "project only reply tokens through the LM head (same results; trl does it only with Triton)"}
    )
    precompute_reference: bool = field(
        default=False, metadata={"help": "reference log-probs in one pass before training (cached for a rerun on the same data)"}
    )
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
        if self.max_prompt_tokens <= 0:
            raise ValueError(f"max_prompt_tokens must be > 0, got {self.max_prompt_tokens}")
        if self.lora_layers < 0:
            raise ValueError(f"lora_layers must be >= 0, got {self.lora_layers}")

    @property
    def prompt_budget(self) -> int:
        """The prompt tokens kept: max_prompt_tokens, or half of max_length when it would fill it (room for the replies)."""
        return self.max_prompt_tokens if self.max_prompt_tokens < self.max_length else max(1, self.max_length // 2)


def conversational(pairs: list[Pair], tokenizer=None, max_prompt_tokens: int = 0):
    """TRL's conversational preference dataset; each prompt cut to its last turns that fit."""
    from datasets import Dataset

    def prompt(text: str) -> list[dict]:
        # a multi-turn HH prompt becomes its turns, so the chat template formats each one
        turns = transcript_messages(text)
        return last_turns(turns, tokenizer, max_prompt_tokens) if tokenizer is not None and max_prompt_tokens else turns

    return Dataset.from_list(
        [
            {
                "prompt": prompt(p.prompt),
                "chosen": [{"role": "assistant", "content": p.chosen}],
                "rejected": [{"role": "assistant", "content": p.rejected}],
            }
            for p in pairs
        ]
    )


def held_out_metrics(trainer, beta: float, loss_type: str) -> dict:
    """Preference accuracy (ties count half), mean margin and loss over the held-out pairs.

    One pass of the policy per batch (the reference's log-probs come precomputed or from a pass
    with the adapters off). trl's own accuracy counts a tie as wrong, so a model that has not
    moved (every implicit reward 0) would read 0.00 instead of a coin's 0.50.
    """
    import torch
    import torch.nn.functional as F

    model = trainer.model
    was_training = model.training
    model.eval()
    margins, losses = [], []
    with torch.no_grad():
        for batch in trainer.get_eval_dataloader():
            mask = batch["completion_mask"]
            if "ref_chosen_logps" in batch:
                ref_c, ref_r = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
            else:
                ref_c, ref_r = trainer.compute_ref_log_probs(model, batch)
            inputs = {k: v for k, v in batch.items() if k not in ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")}
            labels = batch["input_ids"].masked_fill(mask == 0, -100)
            logps = model(**inputs, labels=labels, use_cache=False, fused_lm_head=True).log_probs[:, -(mask.size(1) - 1) :].sum(dim=1)
            pol_c, pol_r = logps.chunk(2)
            len_c, len_r = mask.sum(dim=1).clamp(min=1).chunk(2)
            ratio_c, ratio_r = (pol_c - ref_c).float(), (pol_r - ref_r).float()
            margin = beta * (ratio_c - ratio_r)
            if loss_type == "ipo":
                loss = ((ratio_c / len_c - ratio_r / len_r) - 1 / (2 * beta)) ** 2
            elif loss_type == "hinge":
                loss = torch.relu(1 - margin)
            else:
                loss = -F.logsigmoid(margin)
            margins.append(margin.cpu())
            losses.append(loss.cpu())
    model.train(was_training)
    if not margins:
        return {}
    m = torch.cat(margins)
    return {
        "eval_loss": float(torch.cat(losses).mean()),
        "eval_accuracies": float((m > 0).float().mean() + 0.5 * (m == 0).float().mean()),
        "eval_margins": float(m.mean()),
    }


def adapter_is_zero(model) -> bool:
    """True when every LoRA B matrix is zero: the adapted model computes exactly what the base does."""
    found = [p for n, p in model.named_parameters() if "lora_B" in n]
    return bool(found) and all(not p.detach().any() for p in found)


def tie_metrics(beta: float, loss_type: str) -> dict:
    """Held-out metrics when the policy is the reference: every margin 0, a tie, counted half."""
    import math

    loss = {"ipo": (1 / (2 * beta)) ** 2, "hinge": 1.0}.get(loss_type, math.log(2))
    return {"eval_loss": loss, "eval_accuracies": 0.5, "eval_margins": 0.0}


@contextmanager
def replies_scored_only():
    """Score only the reply tokens, not every position, while trl's DPO runs without Triton.

    trl's fused LM head projects the positions whose labels count (the replies) on a GPU with
    Triton, but every position (the prompt and the padding too) elsewhere, to keep shapes fixed
    for compilers such as Neuron's. On a CPU that is most of the work: the head over a 49k
    vocabulary on prompt tokens whose log-probs are thrown away. Same kernel, same results (a
    test compares them), fewer rows.
    """
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None:  # another trl: leave it as it is
        yield
        return
    trl_utils._use_triton = lambda device: True  # only decides which rows are scored, in this module
    try:
        yield
    finally:
        trl_utils._use_triton = original


def _trainer_class():
    from transformers.trainer_pt_utils import LengthGroupedSampler
    from trl import DPOTrainer

    class LengthGroupedDPOTrainer(DPOTrainer):
        """DPOTrainer whose batches hold pairs of similar length (shuffled in groups), so less padding."""

        def _get_train_sampler(self, train_dataset=None):
            data = train_dataset if train_dataset is not None else self.train_dataset
            cap = self.args.max_length or 10**9
            lengths = [
                min(cap, len(p) + max(len(c), len(r)))
                for p, c, r in zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"], strict=True)
            ]
            return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths=lengths)

    return LengthGroupedDPOTrainer


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
    # several processes: each loads onto its own GPU (cuda:LOCAL_RANK), not all onto GPU 0
    model, tokenizer = load_causal_lm(cfg.policy, registry, device=init_distributed() if world_size() > 1 else None, dtype=torch.float32)
    tokenizer.padding_side = "right"  # training batches; generation is not done here
    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    targets = [t for t in ("q_proj", "k_proj", "v_proj", "o_proj") if t in names] or None
    layers = getattr(model.config, "num_hidden_layers", 0)
    top = list(range(max(0, layers - cfg.lora_layers), layers)) if cfg.lora_layers and layers else None
    lora = LoraConfig(
        task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=targets, layers_to_transform=top
    )
    args = DPOConfig(
        **trainer_arguments(run, cfg.seed, cfg.logging_steps, cfg.save_steps),
        beta=cfg.beta,
        loss_type=[cfg.loss_type],
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        max_length=cfg.max_length,
        truncation_mode="keep_start",  # prompts are already cut to max_prompt_tokens, so a long reply loses its end
        precompute_ref_log_probs=cfg.precompute_reference,
        gradient_checkpointing=False,
    )
    trainer_class = _trainer_class() if cfg.group_by_length else DPOTrainer
    with replies_scored_only() if cfg.replies_only else nullcontext():
        started = time.perf_counter()
        trainer = trainer_class(
            model=model,
            ref_model=None,  # with LoRA the reference is the model with its adapters off
            args=args,
            train_dataset=conversational(train_pairs, tokenizer, cfg.prompt_budget),
            eval_dataset=conversational(eval_pairs, tokenizer, cfg.prompt_budget) if eval_pairs else None,
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[run_callback(run, stop)],
        )
        # tokenising, and with precompute_reference the reference pass over every pair
        run.append_event({"step": 0, "prepare_seconds": round(time.perf_counter() - started, 1)})

        def held_out() -> dict:
            return held_out_metrics(trainer, cfg.beta, cfg.loss_type) if eval_pairs else {}

        # A new adapter starts with LoRA's B at zero, so the policy is the reference and every held-out
        # pair is a tie: that is known without two passes over the held-out set (minutes on a CPU)
        before = tie_metrics(cfg.beta, cfg.loss_type) if eval_pairs and adapter_is_zero(trainer.model) else held_out()
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
