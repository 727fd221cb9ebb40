"""Frozen-base features of (prompt, reply) and a Bradley-Terry head fitted on them.

    extractor = FrozenFeatures.load("smollm2-135m-instruct", prompt_format="chat")
    x = extractor.features([(prompt, reply), ...])        # (n, d): what a reward head reads
    w = fit_bradley_terry(x_chosen - x_rejected, l2=0.01)  # P(chosen > rejected) = sigmoid(dx @ w)

The base model runs once per text, without gradients, so a head (or an ensemble of heads) can
be fitted in seconds and cross-validated cheaply. The vector is exactly what the base's own
sequence-classification head reads: the mean of the token vectors for sentence encoders
(:mod:`rlhf.pooling`), the last real token's final hidden state for decoders. A head fitted
here therefore drops into ``...ForSequenceClassification`` and :class:`rlhf.scoring.RewardScorer`
scores with it unchanged. Texts are encoded by :func:`rlhf.scoring.encode_pair`, the one
encoding for training and scoring.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rlhf.scoring import encode_pair, reply_start

POOLINGS = ("classifier", "reply_mean")


class FrozenFeatures:
    """``body``: a transformer returning ``last_hidden_state`` (an encoder, or a decoder without
    its LM head); ``lm_head`` (decoders, optional) for the reply's log-probability."""

    def __init__(
        self, body, tokenizer, device: torch.device, reading: dict, batch_size: int = 16, lm_head=None, pooling: str = "classifier"
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.pooling = pooling
        self.body, self.tokenizer, self.device = body.to(device).eval(), tokenizer, device
        self.lm_head = lm_head.to(device) if lm_head is not None else None
        self.format = reading
        self.batch_size = batch_size
        self.is_encoder = tokenizer.cls_token is not None and tokenizer.sep_token is not None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.stop = None  # an optional stop flag (truthy when set), checked between batches

    @classmethod
    def of_classifier(
        cls, model, tokenizer, reading: dict, device: torch.device | None = None, batch_size: int = 16, pooling: str = "classifier"
    ) -> FrozenFeatures:
        """The features a ``...ForSequenceClassification`` model's head reads (``classifier``), or
        the mean of the reply's token vectors (``reply_mean``, decoders)."""
        from rlhf.device import pick_device

        body = getattr(model, model.base_model_prefix)
        return cls(body, tokenizer, device or pick_device(), reading, batch_size, pooling=pooling)

    @classmethod
    def load(
        cls,
        name: str,
        registry=None,
        prompt_format: str = "transcript",
        max_length: int = 512,
        max_prompt_tokens: int = 0,
        max_reply_tokens: int = 0,
        device: str | None = None,
    ) -> FrozenFeatures:
        """A registered model (or folder) as a feature extractor; decoders keep their LM head."""
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        from rlhf.device import pick_device
        from rlhf.registry import ModelRegistry

        folder = (registry or ModelRegistry()).resolve(name)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        encoder = tokenizer.cls_token is not None and tokenizer.sep_token is not None
        fmt = {"prompt_format": prompt_format, "max_length": max_length}
        fmt |= {"max_prompt_tokens": max_prompt_tokens, "max_reply_tokens": max_reply_tokens}
        if encoder:
            return cls(AutoModel.from_pretrained(folder), tokenizer, pick_device(device), fmt)
        lm = AutoModelForCausalLM.from_pretrained(folder)
        return cls(lm.get_decoder(), tokenizer, pick_device(device), fmt, lm_head=lm.lm_head)

    def encode(self, prompt, reply: str) -> list[int]:
        return encode_pair(self.tokenizer, prompt, reply, **self.format)

    def _batches(self, pairs: Sequence[tuple]):
        ids = [self.encode(p, r) for p, r in pairs]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(len(ids[i]) for i in rows)
            input_ids = torch.tensor([ids[i] + [pad] * (width - len(ids[i])) for i in rows], device=self.device)
            mask = torch.tensor([[1] * len(ids[i]) + [0] * (width - len(ids[i])) for i in rows], device=self.device)
            yield rows, ids, input_ids, mask

    @torch.inference_mode()
    def features(self, pairs: Sequence[tuple]) -> torch.Tensor:
        """The vector a head reads, one row per (prompt, reply): what the sequence-classification
        head reads, or the mean over the reply's tokens (its end token included)."""
        out: torch.Tensor | None = None
        starts = [reply_start(self.tokenizer, p, r, **self.format) for p, r in pairs] if self.pooling == "reply_mean" else []
        for rows, ids, input_ids, mask in self._batches(pairs):
            if self.stop is not None and bool(self.stop):
                raise InterruptedError("stopped")
            hidden = self.body(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
            if self.pooling == "reply_mean":
                pooled = torch.stack([hidden[b, starts[i] : len(ids[i])].mean(0) for b, i in enumerate(rows)])
            else:
                pooled = self._pool(hidden, input_ids, mask)
            if out is None:
                out = torch.zeros(len(pairs), pooled.shape[1])
            out[rows] = pooled.cpu()
        return out if out is not None else torch.zeros(0, 0)

    def _pool(self, hidden: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.is_encoder:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
        return hidden[torch.arange(len(hidden)), last_real_token(input_ids, self.tokenizer.pad_token_id)]

    @torch.inference_mode()
    def decoder_features(self, pairs: Sequence[tuple]) -> dict[str, torch.Tensor]:
        """Decoders, for comparing readings: last token, mean over the reply (final and middle
        layer), the reply's mean log-probability and its token count."""
        n = len(pairs)
        starts = [reply_start(self.tokenizer, p, r, **self.format) for p, r in pairs]
        out: dict[str, torch.Tensor] = {}
        for rows, ids, input_ids, mask in self._batches(pairs):
            result = self.body(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
            final = result.last_hidden_state.float()
            middle = result.hidden_states[len(result.hidden_states) // 2].float()
            values = {"last": final[torch.arange(len(final)), last_real_token(input_ids, self.tokenizer.pad_token_id)]}
            means, middles, logprobs, counts = [], [], [], []
            for b, i in enumerate(rows):
                start, end = starts[i], len(ids[i])
                means.append(final[b, start:end].mean(0))
                middles.append(middle[b, start:end].mean(0))
                logits = self.lm_head(result.last_hidden_state[b, start - 1 : end - 1]).float()
                target = input_ids[b, start:end]
                logprobs.append(torch.log_softmax(logits, -1).gather(1, target[:, None]).mean())
                counts.append(float(end - start))
            values |= {"mean": torch.stack(means), "middle": torch.stack(middles)}
            values |= {"logprob": torch.stack(logprobs), "tokens": torch.tensor(counts)}
            for key, value in values.items():
                if key not in out:
                    out[key] = torch.zeros((n, *value.shape[1:]))
                out[key][rows] = value.cpu()
        return out


def last_real_token(input_ids: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """The position a sequence-classification head reads: the rightmost token that is not padding
    (as transformers finds it, so an end token equal to the pad token is skipped)."""
    if pad_id is None:
        return torch.full((len(input_ids),), input_ids.shape[1] - 1, device=input_ids.device)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    return (positions * (input_ids != pad_id)).argmax(-1)


def folds(n: int, k: int, seed: int = 0) -> list[list[int]]:
    import random

    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i::k] for i in range(k)]


def pair_accuracy(margins: torch.Tensor) -> float:
    """Share of pairs with a positive margin, a tie counted as half."""
    return float(((margins > 0).float() + 0.5 * (margins == 0).float()).mean()) if len(margins) else 0.0


L2_GRID = (1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


def pick_l2(diff: torch.Tensor, grid: tuple[float, ...] = L2_GRID, k: int = 4, seed: int = 1) -> float:
    """The L2 strength with the best k-fold accuracy on these (standardised) pairs only."""
    if len(diff) < 2 * k:
        return 0.1
    parts = folds(len(diff), k, seed)
    best, best_acc = grid[0], -1.0
    for l2 in grid:
        margins = []
        for i, held in enumerate(parts):
            train = [j for m, f in enumerate(parts) if m != i for j in f]
            margins.append(diff[held] @ fit_bradley_terry(diff[train], l2))
        acc = pair_accuracy(torch.cat(margins))
        if acc > best_acc:
            best, best_acc = l2, acc
    return best


def fit_heads(chosen: torch.Tensor, rejected: torch.Tensor, heads: int, l2: float | None = None, seed: int = 0) -> dict:
    """Linear Bradley-Terry heads on raw features, standardisation folded into the weights.

    One head uses every pair; several are fitted on bootstrap resamples (their disagreement is
    the uncertainty). Returns ``weight`` (heads, d) to apply to raw features, ``offsets`` (each
    head's mean score over the training texts) and the ``l2`` used.
    """
    texts = torch.cat([chosen, rejected])
    std = texts.std(0).clamp(min=1e-6)
    diff = (chosen - rejected) / std
    l2 = pick_l2(diff) if l2 is None else l2
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(heads):
        weights = None
        if heads > 1:
            weights = torch.bincount(torch.randint(len(diff), (len(diff),), generator=gen), minlength=len(diff)).float()
        rows.append(fit_bradley_terry(diff, l2, weights=weights) / std)
    weight = torch.stack(rows)
    return {"weight": weight, "offsets": (texts @ weight.T).mean(0), "l2": l2}


def fit_bradley_terry(diff: torch.Tensor, l2: float, steps: int = 200, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weights w minimising the Bradley-Terry loss mean(softplus(-diff @ w)) + l2/2 |w|^2.

    ``diff`` holds chosen-minus-rejected feature rows; ``weights`` (optional) weighs each pair
    (bootstrap counts for an ensemble). Convex, so L-BFGS finds the optimum in a few steps.
    """
    diff = diff.double()
    weights = torch.ones(len(diff), dtype=torch.double) if weights is None else weights.double()
    weights = weights / weights.sum()
    w = torch.zeros(diff.shape[1], dtype=torch.double, requires_grad=True)
    optimiser = torch.optim.LBFGS([w], lr=1, max_iter=steps, line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        optimiser.zero_grad()
        loss = (weights * torch.nn.functional.softplus(-(diff @ w))).sum() + 0.5 * l2 * (w @ w)
        loss.backward()
        return loss

    optimiser.step(closure)
    return w.detach().float()
