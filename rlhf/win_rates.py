"""Win rates with honest error bars: bootstrap intervals and a length-controlled rate.

Outcomes are per prompt: 1 (the model's reply won), 0.5 (tie) or 0 (lost) against the baseline.

    rate, low, high = win_rate(outcomes)                       # mean, bootstrap 95% percentile interval
    lc = length_controlled(outcomes, model_words, base_words)  # the judge's preference at equal length

The length-controlled win rate follows AlpacaEval 2's idea: fit a logistic regression of the
outcome on the length difference (``tanh(diff / sd)``, so a few huge replies cannot dominate)
and read the prediction at a length difference of zero. A judge that only likes long replies
gives a high raw rate and a length-controlled rate near 0.5; a real improvement survives.
Ties enter the fit as half a win and half a loss (sample weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def as_dict(self) -> dict:
        return asdict(self)


def bootstrap_mean(values: Sequence[float], rounds: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """The mean and its percentile bootstrap interval (resampling the prompts)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("no outcomes to summarise")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(rounds, x.size))].mean(axis=1)
    tail = (1 - level) / 2
    return Interval(float(x.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail)))


def win_rate(outcomes: Sequence[float], rounds: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    return bootstrap_mean(outcomes, rounds, level, seed)


def _lc_fit(outcomes: np.ndarray, feature: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression

    wins = outcomes  # 1, 0.5, 0: each prompt is a win row with weight y and a loss row with weight 1 - y
    X = np.concatenate([feature, feature])[:, None]
    y = np.concatenate([np.ones_like(wins), np.zeros_like(wins)])
    w = np.concatenate([wins, 1 - wins])
    keep = w > 0
    if len(set(y[keep].tolist())) < 2:  # every prompt won (or lost): no slope to remove
        return float(wins.mean())
    # A mild L2 penalty on the slope only (the intercept is not penalised by lbfgs) keeps the
    # fit finite when the judge follows length perfectly.
    model = LogisticRegression(C=10.0)
    model.fit(X[keep], y[keep], sample_weight=w[keep])
    return float(1 / (1 + np.exp(-model.intercept_[0])))


def length_controlled(
    outcomes: Sequence[float],
    model_lengths: Sequence[float],
    base_lengths: Sequence[float],
    rounds: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """The win rate at equal reply length, with a bootstrap interval over prompts."""
    y = np.asarray(outcomes, dtype=float)
    diff = np.asarray(model_lengths, dtype=float) - np.asarray(base_lengths, dtype=float)
    if y.size == 0:
        raise ValueError("no outcomes to summarise")
    sd = diff.std()
    if sd == 0:  # equal lengths everywhere: nothing to control for
        return bootstrap_mean(y, rounds, level, seed)
    feature = np.tanh(diff / sd)
    value = _lc_fit(y, feature)
    rng = np.random.default_rng(seed)
    fits = []
    for _ in range(rounds):
        idx = rng.integers(0, y.size, size=y.size)
        fits.append(_lc_fit(y[idx], feature[idx]))
    tail = (1 - level) / 2
    return Interval(value, float(np.quantile(fits, tail)), float(np.quantile(fits, 1 - tail)))


def words(text: str) -> int:
    """Reply length in words: comparable across models with different tokenizers."""
    return len(text.split())
