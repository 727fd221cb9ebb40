"""Sentence embeddings with a registered encoder (MiniLM by default): mean pooling, unit length.

    encoder = SentenceEncoder.load("minilm-l6")
    encoder.embed(["a text", "another"])            # (n, d) tensor, rows of length 1
    encoder.similarities("query", ["a", "b"])       # cosine similarities

Used for nearest-neighbour demonstrations in the prompt lab and the similarity reward of PPO.
Embeddings of texts seen before are cached (a pool is embedded once).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class SentenceEncoder:
    def __init__(self, model, tokenizer, device: torch.device, max_length: int = 256, cache_size: int = 50_000) -> None:
        self.model, self.tokenizer, self.device = model.to(device).eval(), tokenizer, device
        self.max_length = max_length
        self._cache: dict[str, torch.Tensor] = {}
        self._cache_size = cache_size

    @classmethod
    def load(cls, name: str = "minilm-l6", registry=None, device: str | None = None) -> SentenceEncoder:
        from transformers import AutoModel, AutoTokenizer

        from rlhf.device import pick_device
        from rlhf.registry import ModelRegistry

        folder = (registry or ModelRegistry()).resolve(name)
        return cls(AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder), pick_device(device))

    @torch.inference_mode()
    def _embed_new(self, texts: list[str]) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), 64):
            batch = self.tokenizer(
                texts[start : start + 64], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
        return torch.cat(out)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        texts = [t or " " for t in texts]
        new = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if new:
            if len(self._cache) + len(new) > self._cache_size:
                self._cache.clear()
            for text, vector in zip(new, self._embed_new(new), strict=True):
                self._cache[text] = vector
        return torch.stack([self._cache[t] for t in texts])

    def similarities(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        return (self.embed(texts) @ self.embed([query])[0]).tolist()
