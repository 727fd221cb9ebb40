"""Bradley-Terry ratings of chat models from pairwise arena battles, fitted as Chatbot Arena does it.

A battle is ``(model_a, model_b, outcome)`` with ``outcome`` one of :data:`OUTCOMES`: ``"a"`` or
``"b"`` (that side won), ``"tie"``, or ``"both_bad"`` (counted as a tie, as Chatbot Arena does)::

    from rlhf.ratings import bootstrap_ratings, fit_bt, pair_weights, sample_pair, win_matrix

    battles = [("smollm2", "sft-3", "b"), ("sft-3", "ppo-7", "tie"), ...]
    fit_bt(battles)                               # {"ppo-7": 1093.2, "sft-3": 1010.4, ...}, mean 1000
    fit_bt(battles, anchor="smollm2")             # the same, shifted so smollm2 is exactly 1000
    for r in bootstrap_ratings(battles, rounds=200, seed=0):
        print(r.model, round(r.rating), f"[{r.lower:.0f}, {r.upper:.0f}]", r.battles)
    models, wins, counts = win_matrix(battles)    # pairwise win shares (ties as half) and counts
    weights = pair_weights(arena_models, ratings, counts_by_pair)
    left, right = sample_pair(weights, random.Random())   # the arena's next battle

The fit is LMSYS's ``compute_mle_elo``: a logistic regression without intercept (scikit-learn's
``LogisticRegression``, no penalty, lbfgs) on a design matrix with ``+log(BASE)`` in model A's
column and ``-log(BASE)`` in model B's, target "A won", on the Elo-like scale
``rating = SCALE * coefficient + INIT``. A tie counts as half a win each way; LMSYS duplicates
the rows, here the same likelihood comes from sample weights, and battles are summed per pair
and outcome first, so the solver works on two rows per pair of models, however many battles.

When the maximum-likelihood estimate does not exist (a model that only ever won or only ever
lost, or more generally a "won or tied against" graph that is not strongly connected), the
unpenalised fit runs off to infinity. Only then a weak ridge penalty is added: a Gaussian prior
on every rating with standard deviation :data:`FALLBACK_PRIOR_SD` (SCALE points, i.e. 10:1 odds).
It keeps ratings finite, grows with the evidence and moves them little where the data decide:
10 wins of 10 against one opponent put a model about 590 points above it (10 wins and 1 loss
give 400 without any penalty), 100 of 100 about 920 (100 and 1: 800), 1 of 1 about 290.
Models in groups that never met each other cannot be compared; each group is then centred on its own.

Bootstrap intervals follow LMSYS too: resample the battles with replacement, refit, take the
percentile interval. Resampling draws the per-(pair, outcome) counts from a multinomial with the
observed shares, which is the same distribution as resampling rows and much cheaper.

Numpy, scipy and scikit-learn only: the studio's web server imports this module, so no torch.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import sklearn
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.linear_model import LogisticRegression

OUTCOMES = ("a", "b", "tie", "both_bad")
SCALE, BASE, INIT = 400.0, 10.0, 1000.0

# Prior standard deviation (rating points) of the ridge used only when the MLE does not exist.
# One SCALE (10:1 odds) is about the spread of real arena ratings, so it only tames the divergence.
FALLBACK_PRIOR_SD = SCALE

# pair_weights: the floor keeps every pair possible; a pair with an unrated model gets NEW_MODEL_UNCERTAINTY,
# twice the largest uncertainty a rated pair can have, so new models are battled first.
WEIGHT_FLOOR = 0.05
NEW_MODEL_UNCERTAINTY = 2.0

# LMSYS uses tol=1e-6 on the mean loss; tighter costs a few lbfgs iterations and keeps ratings
# within a hundredth of a point of the exact MLE (the tests compare with choix).
_TOL = 1e-8
_MAX_ITER = 1000


@dataclass(frozen=True)
class Rating:
    """One model's rating with its bootstrap interval and its record (ties include both_bad)."""

    model: str
    rating: float  # point estimate (fit on all battles)
    lower: float  # bootstrap (1 - level) / 2 quantile (2.5% for level 0.95)
    upper: float  # bootstrap (1 + level) / 2 quantile (97.5% for level 0.95)
    battles: int
    wins: int
    losses: int
    ties: int


def check_battles(battles: Iterable[Sequence[str]]) -> list[tuple[str, str, str]]:
    """The battles as a list of ``(model_a, model_b, outcome)``; ValueError naming the first bad row."""
    checked: list[tuple[str, str, str]] = []
    for index, row in enumerate(battles):
        if isinstance(row, str | bytes) or not isinstance(row, Sequence) or len(row) != 3:
            raise ValueError(f"battle {index} is {row!r}: expected (model_a, model_b, outcome)")
        model_a, model_b, outcome = row
        for side, name in (("model_a", model_a), ("model_b", model_b)):
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"battle {index} {tuple(row)!r}: {side} must be a non-empty model name")
        if model_a == model_b:
            raise ValueError(f"battle {index} {tuple(row)!r}: a model cannot battle itself ({model_a!r} on both sides)")
        if outcome not in OUTCOMES:
            raise ValueError(f"battle {index} {tuple(row)!r}: unknown outcome {outcome!r}, expected one of {', '.join(OUTCOMES)}")
        checked.append((model_a, model_b, outcome))
    return checked


@dataclass(frozen=True)
class _Tally:
    """Battles summed per unordered pair: pairs[k] = (i, j) with i < j, counts[k] = (i won, j won, tied)."""

    models: list[str]
    pairs: np.ndarray  # (P, 2) int model indices
    counts: np.ndarray  # (P, 3) float


def _tally(battles: Iterable[Sequence[str]]) -> _Tally:
    checked = check_battles(battles)
    models = sorted({name for a, b, _ in checked for name in (a, b)})
    if len(models) < 2:
        raise ValueError("need battles between at least two models")
    index = {name: i for i, name in enumerate(models)}
    by_pair: dict[tuple[int, int], list[float]] = {}
    for a, b, outcome in checked:
        i, j = index[a], index[b]
        # Keep each pair once, lower index first, so (a, b) and (b, a) battles add up.
        if outcome in ("tie", "both_bad"):
            column = 2
        else:
            a_won = outcome == "a"
            if i > j:
                a_won = not a_won
            column = 0 if a_won else 1
        row = by_pair.setdefault((min(i, j), max(i, j)), [0.0, 0.0, 0.0])
        row[column] += 1.0
    keys = sorted(by_pair)
    return _Tally(models, np.array(keys, dtype=np.int64).reshape(-1, 2), np.array([by_pair[k] for k in keys]).reshape(-1, 3))


def _mle_exists(n_models: int, pairs: np.ndarray, score_i: np.ndarray, score_j: np.ndarray) -> bool:
    """Zermelo/Ford condition: the graph "i won or tied against j" is strongly connected."""
    rows = np.concatenate([pairs[score_i > 0, 0], pairs[score_j > 0, 1]])
    cols = np.concatenate([pairs[score_i > 0, 1], pairs[score_j > 0, 0]])
    graph = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_models, n_models))
    n_components, _ = connected_components(graph, directed=True, connection="strong")
    return n_components == 1


def _fit_coefficients(n_models: int, pairs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Rating points (before centring) per model index; NaN for models without a battle in ``counts``."""
    fought = counts.sum(axis=1) > 0
    pairs, counts = pairs[fought], counts[fought]
    present = np.unique(pairs)
    column = np.full(n_models, -1)
    column[present] = np.arange(len(present))
    local = column[pairs]
    n_pairs, n_present = len(pairs), len(present)

    # Ties are half a win each way (LMSYS duplicates tie rows; weights give the same likelihood).
    score_i = counts[:, 0] + 0.5 * counts[:, 2]
    score_j = counts[:, 1] + 0.5 * counts[:, 2]
    x = np.zeros((n_pairs, n_present))
    x[np.arange(n_pairs), local[:, 0]] = math.log(BASE)
    x[np.arange(n_pairs), local[:, 1]] = -math.log(BASE)
    # One row "i won" and one "i lost" per pair, zero weights included, so both classes are always there.
    design = np.vstack([x, x])
    target = np.concatenate([np.ones(n_pairs), np.zeros(n_pairs)])
    weight = np.concatenate([score_i, score_j])

    # C = inf is scikit-learn 1.8+'s spelling of "no penalty" (penalty=None is deprecated).
    # With the fallback ridge the objective is C * sum(weighted loss) + ||coef||^2 / 2: a Gaussian
    # prior with sd sqrt(C) in coefficient units (SCALE points each).
    exact = _mle_exists(n_present, local, score_i, score_j)
    c = np.inf if exact else (FALLBACK_PRIOR_SD / SCALE) ** 2
    model = LogisticRegression(C=c, fit_intercept=False, tol=_TOL, max_iter=_MAX_ITER)
    with sklearn.config_context(assume_finite=True):
        model.fit(design, target, sample_weight=weight)
    points = np.full(n_models, np.nan)
    points[present] = SCALE * model.coef_[0]
    return points


def _place(points: np.ndarray, models: list[str], anchor: str | None) -> np.ndarray:
    """Shift rating points so the anchor is INIT, or the mean of the rated models is INIT."""
    if anchor is None:
        return points - np.nanmean(points) + INIT
    # NaN everywhere when the anchor sat out a bootstrap round: that round says nothing about differences to it.
    return points - points[models.index(anchor)] + INIT


def _check_anchor(anchor: str | None, models: list[str]) -> None:
    if anchor is not None and anchor not in models:
        raise ValueError(f"anchor model {anchor!r} has no battles; models with battles: {', '.join(models)}")


def fit_bt(battles: Iterable[Sequence[str]], anchor: str | None = None) -> dict[str, float]:
    """Bradley-Terry ratings on the Elo-like scale, highest first.

    ``anchor`` (a model in the battles) is placed at exactly INIT; without it the mean rating is INIT.
    ValueError for bad battles or fewer than two models.
    """
    tally = _tally(battles)
    _check_anchor(anchor, tally.models)
    ratings = _place(_fit_coefficients(len(tally.models), tally.pairs, tally.counts), tally.models, anchor)
    order = sorted(range(len(tally.models)), key=lambda k: (-ratings[k], tally.models[k]))
    return {tally.models[k]: float(ratings[k]) for k in order}


def bootstrap_replicates(
    battles: Iterable[Sequence[str]], rounds: int = 200, seed: int = 0, anchor: str | None = None
) -> tuple[list[str], np.ndarray]:
    """(models sorted by name, ratings[round, model]) refitted on battles resampled with replacement.

    NaN where a model (or the anchor) had no battle in a round's resample. Deterministic for a seed.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    tally = _tally(battles)
    _check_anchor(anchor, tally.models)
    flat = tally.counts.ravel()
    total = int(flat.sum())
    rng = np.random.default_rng(seed)
    replicates = np.empty((rounds, len(tally.models)))
    for r in range(rounds):
        # Resampling `total` rows with replacement = a multinomial draw over (pair, outcome) cells.
        counts = rng.multinomial(total, flat / total).reshape(tally.counts.shape).astype(float)
        replicates[r] = _place(_fit_coefficients(len(tally.models), tally.pairs, counts), tally.models, anchor)
    return tally.models, replicates


def bootstrap_ratings(
    battles: Iterable[Sequence[str]], rounds: int = 200, seed: int = 0, anchor: str | None = None, level: float = 0.95
) -> list[Rating]:
    """Ratings with LMSYS-style percentile bootstrap intervals, highest rating first.

    ``rating`` is the fit on all battles; ``lower``/``upper`` are the (1 - level)/2 and (1 + level)/2
    quantiles over ``rounds`` refits. With an anchor, intervals are for the difference to the anchor
    (whose own interval is then a single point). Deterministic for a seed.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    checked = check_battles(battles)
    point = fit_bt(checked, anchor=anchor)
    models, replicates = bootstrap_replicates(checked, rounds=rounds, seed=seed, anchor=anchor)
    with warnings.catch_warnings():
        # A model absent from every resample (possible only with very few rounds) has an all-NaN column.
        warnings.simplefilter("ignore", RuntimeWarning)
        bounds = np.nanquantile(replicates, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=0)
    record = {name: [0, 0, 0] for name in models}  # wins, losses, ties
    for a, b, outcome in checked:
        if outcome == "a":
            record[a][0] += 1
            record[b][1] += 1
        elif outcome == "b":
            record[b][0] += 1
            record[a][1] += 1
        else:
            record[a][2] += 1
            record[b][2] += 1
    result = [
        Rating(
            model=name,
            rating=point[name],
            lower=float(bounds[0, k]),
            upper=float(bounds[1, k]),
            battles=sum(record[name]),
            wins=record[name][0],
            losses=record[name][1],
            ties=record[name][2],
        )
        for k, name in enumerate(models)
    ]
    return sorted(result, key=lambda r: (-r.rating, r.model))


def win_matrix(battles: Iterable[Sequence[str]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(models by fitted rating, highest first; wins; counts).

    ``wins[i, j]`` is the share of the battles between models i and j that i won, a tie counting
    half (NaN where they never met, and on the diagonal); ``counts[i, j]`` is how many they fought.
    """
    checked = check_battles(battles)
    models = list(fit_bt(checked))
    index = {name: k for k, name in enumerate(models)}
    score = np.zeros((len(models), len(models)))
    counts = np.zeros((len(models), len(models)), dtype=np.int64)
    for a, b, outcome in checked:
        i, j = index[a], index[b]
        counts[i, j] += 1
        counts[j, i] += 1
        share_a = {"a": 1.0, "b": 0.0}.get(outcome, 0.5)
        score[i, j] += share_a
        score[j, i] += 1.0 - share_a
    with np.errstate(invalid="ignore", divide="ignore"):
        wins = np.where(counts > 0, score / counts, np.nan)
    return models, wins, counts


def expected_win(rating_a: float, rating_b: float) -> float:
    """Probability that A beats B under Bradley-Terry on this scale: 1 / (1 + BASE ** ((b - a) / SCALE))."""
    return 1.0 / (1.0 + BASE ** ((rating_b - rating_a) / SCALE))


def _interval_overlap(a: Rating, b: Rating) -> float:
    """Length of the intersection of the two intervals over the shorter one's length, in [0, 1]."""
    if not all(math.isfinite(v) for v in (a.lower, a.upper, b.lower, b.upper)):
        return 1.0  # no usable interval: treat the order as unknown
    shared = min(a.upper, b.upper) - max(a.lower, b.lower)
    shorter = min(a.upper - a.lower, b.upper - b.lower)
    if shorter <= 0.0:
        return 1.0 if shared >= 0.0 else 0.0
    return min(1.0, max(0.0, shared / shorter))


def pair_weights(models: list[str], ratings: list[Rating], counts: Mapping[tuple[str, str], int]) -> dict[tuple[str, str], float]:
    """Sampling weights for the arena's next battle, keyed by unordered pair ``(a, b)`` with ``a < b``.

    For two rated models (in ``ratings`` with at least one battle)::

        p           = expected_win(rating_a, rating_b)
        uncertainty = (4 * p * (1 - p) + overlap) / 2        # in [0, 1]
        weight      = (WEIGHT_FLOOR + uncertainty) / sqrt(1 + n)

    where ``overlap`` is the intersection of the two bootstrap intervals over the shorter one
    (1 = one inside the other, 0 = apart) and ``n`` the battles the pair has already fought
    (``counts`` may key a pair in either order; both orders are added, so count each battle once).
    A pair with an unrated model uses ``uncertainty = NEW_MODEL_UNCERTAINTY`` (2), so while
    ``n = 0`` its weight is above every rated pair's. Every weight is positive.
    """
    names = sorted(set(models))
    if len(names) < 2:
        raise ValueError("need at least two models to make a pair")
    rated = {r.model: r for r in ratings if r.battles > 0}
    weights: dict[tuple[str, str], float] = {}
    for k, a in enumerate(names):
        for b in names[k + 1 :]:
            fought = counts.get((a, b), 0) + counts.get((b, a), 0)
            if a in rated and b in rated:
                p = expected_win(rated[a].rating, rated[b].rating)
                uncertainty = (4.0 * p * (1.0 - p) + _interval_overlap(rated[a], rated[b])) / 2.0
            else:
                uncertainty = NEW_MODEL_UNCERTAINTY
            weights[(a, b)] = (WEIGHT_FLOOR + uncertainty) / math.sqrt(1.0 + max(0, fought))
    return weights


def sample_pair(weights: Mapping[tuple[str, str], float], rng: random.Random) -> tuple[str, str]:
    """One pair drawn with probability proportional to its weight, in a random left/right order."""
    keys = sorted(weights)
    values = [float(weights[k]) for k in keys]
    if not keys:
        raise ValueError("no pairs to sample from")
    if not all(math.isfinite(v) and v > 0.0 for v in values):
        raise ValueError("pair weights must be positive finite numbers")
    a, b = rng.choices(keys, weights=values, k=1)[0]
    # Random sides, so position bias in the votes averages out instead of favouring one model.
    return (a, b) if rng.random() < 0.5 else (b, a)
