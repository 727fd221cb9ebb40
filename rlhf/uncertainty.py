"""How unsure a reward model is about the order of a prompt's replies (for active learning).

    scorer = RewardScorer.load(folder)                  # an ensemble of heads, or one head
    prompt_uncertainty(scorer, prompt, replies)          # 0 (sure) .. ln 2 (a coin flip)
    rank_by_uncertainty(scorer, [(prompt, replies), ...])  # most uncertain first

Each pair of replies (a, b) gets P(a beats b) = sigmoid(score_a - score_b) from every head.
With an ensemble the measure is BALD (Houlsby et al., 2011): the entropy of the heads' mean
probability minus the heads' mean entropy, i.e. how much the heads *disagree*, which a human
ranking would settle. With one head it is that head's entropy (plain uncertainty sampling),
which also counts pairs that are genuinely close. A prompt's uncertainty is the mean over its
reply pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-7, 1 - 1e-7)
    return -(p * p.log() + (1 - p) * (1 - p).log())


def pair_uncertainty(heads_a: torch.Tensor, heads_b: torch.Tensor) -> torch.Tensor:
    """Per pair of replies: BALD over the heads' scores (columns), or entropy with one head."""
    p = torch.sigmoid(heads_a - heads_b)  # (pairs, heads)
    if p.shape[1] == 1:
        return _entropy(p[:, 0])
    return _entropy(p.mean(1)) - _entropy(p).mean(1)


def uncertainties(scorer, items: Sequence[tuple[str, Sequence[str]]]) -> list[float]:
    """One figure per (prompt, replies): the mean over its reply pairs (0 with fewer than 2)."""
    texts = [(prompt, reply) for prompt, replies in items for reply in replies]
    heads = scorer.score_heads(texts) if texts else torch.zeros(0, 1)
    out, at = [], 0
    for _, replies in items:
        block = heads[at : at + len(replies)]
        at += len(replies)
        i, j = torch.triu_indices(len(replies), len(replies), offset=1)
        out.append(float(pair_uncertainty(block[i], block[j]).mean()) if len(i) else 0.0)
    return out


def prompt_uncertainty(scorer, prompt: str, replies: Sequence[str]) -> float:
    return uncertainties(scorer, [(prompt, replies)])[0]


def rank_by_uncertainty(scorer, items: Sequence[tuple[str, Sequence[str]]]) -> list[int]:
    """Indices of ``items``, the most uncertain first."""
    values = uncertainties(scorer, items)
    return sorted(range(len(items)), key=lambda i: -values[i])
