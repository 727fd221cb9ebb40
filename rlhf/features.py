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


class FrozenFeatures:
    def __init__(self, model, tokenizer, device: torch.device, reward_format: dict, batch_size: int = 16) -> None:
        self.model, self.tokenizer, self.device = model.to(device).eval(), tokenizer, device
        self.format = reward_format
        self.batch_size = batch_size
        self.is_encoder = tokenizer.cls_token is not None and tokenizer.sep_token is not None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

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
        model = (AutoModel if encoder else AutoModelForCausalLM).from_pretrained(folder)
        fmt = {"prompt_format": prompt_format, "max_length": max_length, "max_prompt_tokens": max_prompt_tokens, "max_reply_tokens": max_reply_tokens}
        return cls(model, tokenizer, pick_device(device), fmt)

    def encode(self, prompt, reply: str) -> list[int]:
        return encode_pair(self.tokenizer, prompt, reply, **self.format)

    def _body(self):
        """The transformer without its LM head (decoders) or the encoder itself."""
        return self.model if self.is_encoder else self.model.get_decoder()

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
        """The vector a sequence-classification head reads, one row per (prompt, reply)."""
        out: torch.Tensor | None = None
        for rows, ids, input_ids, mask in self._batches(pairs):
            hidden = self._body()(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
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
            result = self._body()(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
            final = result.last_hidden_state.float()
            middle = result.hidden_states[len(result.hidden_states) // 2].float()
            values = {"last": final[torch.arange(len(final)), last_real_token(input_ids, self.tokenizer.pad_token_id)]}
            means, middles, logprobs, counts = [], [], [], []
            for b, i in enumerate(rows):
                start, end = starts[i], len(ids[i])
                means.append(final[b, start:end].mean(0))
                middles.append(middle[b, start:end].mean(0))
                logits = self.model.lm_head(result.last_hidden_state[b, start - 1 : end - 1]).float()
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
