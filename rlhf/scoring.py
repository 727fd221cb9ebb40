"""Score replies with a trained reward model: ``score(prompt, reply) -> float``.

    scorer = RewardScorer.load("runs/reward-.../checkpoint")
    scorer.score("What is 2+2?", "4")            # higher is better
    scorer.score_batch([(prompt, reply), ...])

Texts are encoded exactly as in training (:func:`encode_pair`): prompt and reply as a pair,
truncated from the left so the reply, which is what is judged, survives.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from rlhf.device import pick_device


def encode_pair(tokenizer, prompt: str, reply: str, max_length: int) -> list[int]:
    """Token ids for (prompt, reply), cut from the left when too long; an end token for decoders."""
    is_encoder = tokenizer.cls_token is not None and tokenizer.sep_token is not None
    if is_encoder:
        side = tokenizer.truncation_side
        tokenizer.truncation_side = "left"
        try:
            ids = tokenizer(prompt, reply, truncation="longest_first", max_length=max_length)["input_ids"]
        finally:
            tokenizer.truncation_side = side
        return ids
    text = f"{prompt}\n\nAssistant: {reply}" if prompt else reply
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids = ids + [eos]
    return ids[-max_length:]


class RewardScorer:
    """A loaded reward model (sequence classification, one output)."""

    def __init__(self, model, tokenizer, max_length: int = 512, device: torch.device | None = None) -> None:
        self.device = device or pick_device()
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def load(cls, folder: str | Path, max_length: int = 512, device: str | None = None) -> RewardScorer:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from rlhf.modelfiles import ModelError

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise ModelError(f"{folder} is not a reward model checkpoint (no config.json)")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        if model.config.num_labels != 1:
            raise ModelError(f"{folder} has {model.config.num_labels} outputs; a reward model has one")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        from rlhf.pooling import restore

        restore(model)
        return cls(model, tokenizer, max_length, pick_device(device))

    @torch.inference_mode()
    def score_batch(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> list[float]:
        scores: list[float] = []
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(pairs), batch_size):
            ids = [encode_pair(self.tokenizer, p, r, self.max_length) for p, r in pairs[start : start + batch_size]]
            width = max(len(x) for x in ids)
            # Right padding: sequence-classification heads find the last real token from the pad id.
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=self.device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=self.device)
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits[:, 0]
            scores += logits.float().cpu().tolist()
        return scores

    def score(self, prompt: str, reply: str) -> float:
        return self.score_batch([(prompt, reply)])[0]
