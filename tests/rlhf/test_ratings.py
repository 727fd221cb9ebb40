"""Tests for rlhf.ratings: Bradley-Terry arena ratings, bootstrap intervals, battle pairing.

Run: .venv/bin/python -m pytest tests/rlhf/test_ratings.py  (about 10 s on 2 cores; the coverage study is the slow part)
"""

from __future__ import annotations

import itertools
import math
import random
import subprocess
import sys
import warnings
from collections import Counter

import choix
import numpy as np
import pytest

from rlhf.ratings import (
    BASE,
    INIT,
    OUTCOMES,
    SCALE,
    Rating,
    bootstrap_ratings,
    bootstrap_replicates,
    check_battles,
    expected_win,
    fit_bt,
    pair_weights,
    sample_pair,
    win_matrix,
)

# A warning here (ConvergenceWarning, a deprecated sklearn argument) would be a bug: make it fail.
pytestmark = pytest.mark.filterwarnings("error")


def simulate(true: dict[str, float], n: int, rng: np.random.Generator, tie_rate: float = 0.25) -> list[tuple[str, str, str]]:
    """`n` battles between random distinct pairs, outcomes drawn from the BT model with ties.

    Ties happen with probability 4 * tie_rate * p * (1 - p) (close pairs tie more often) and take
    half of that from each side, so A's expected score (wins + ties / 2) is exactly the BT
    probability p: the model the fit assumes when it counts a tie as half a win. Half of the ties
    are "both_bad", which must count the same.
    """
    names = list(true)
    first = rng.integers(0, len(names), n)
    second = (first + rng.integers(1, len(names), n)) % len(names)  # never the same model
    draws, kinds = rng.random(n), rng.random(n)
    battles = []
    for i, j, u, kind in zip(first, second, draws, kinds, strict=True):
        a, b = names[i], names[j]
        p = expected_win(true[a], true[b])
        tie = 4.0 * tie_rate * p * (1.0 - p)
        if u < p - tie / 2:
            outcome = "a"
        elif u < 1.0 - tie:
            outcome = "b"
        else:
            outcome = "tie" if kind < 0.5 else "both_bad"
        battles.append((a, b, outcome))
    return battles


# --- the fit -------------------------------------------------------------------------------------


def test_fit_recovers_known_ratings() -> None:
    true = {"m0": 1000.0, "m1": 1100.0, "m2": 1200.0, "m3": 1350.0}
    battles = simulate(true, 4000, np.random.default_rng(1))
    assert 0.1 < sum(o in ("tie", "both_bad") for _, _, o in battles) / len(battles) < 0.3

    anchored = fit_bt(battles, anchor="m0")
    assert anchored["m0"] == INIT
    # 4000 battles over 6 pairs: the bootstrap standard error of each difference to the anchor is
    # 9-11 points on this data, so 40 points is about 4 standard errors (observed errors: +15.6
    # for m3, -0.8 for m2, -1.2 for m1).
    for name, value in true.items():
        assert abs(anchored[name] - value) < 40.0, (name, anchored[name])
    assert list(anchored) == ["m3", "m2", "m1", "m0"]  # highest first

    centred = fit_bt(battles)
    assert np.mean(list(centred.values())) == pytest.approx(INIT, abs=1e-9)
    for name in true:  # the anchor only shifts the scale
        assert centred[name] - centred["m0"] == pytest.approx(anchored[name] - INIT, abs=1e-9)


def test_fit_agrees_with_choix() -> None:
    """Same maximum-likelihood estimate as choix's I-LSR (no ties: choix has none)."""
    true = [1000.0, 1080.0, 1150.0, 1230.0, 1400.0]
    names = [f"m{i}" for i in range(len(true))]
    rng = np.random.default_rng(3)
    battles, winner_loser = [], []
    for _ in range(2000):
        i, j = rng.choice(len(true), 2, replace=False)
        a_won = bool(rng.random() < expected_win(true[i], true[j]))
        battles.append((names[i], names[j], "a" if a_won else "b"))
        winner_loser.append((int(i), int(j)) if a_won else (int(j), int(i)))

    ours = fit_bt(battles)
    strengths = choix.ilsr_pairwise(len(true), winner_loser, alpha=1e-8, tol=1e-12, max_iter=1000)
    theirs = strengths * SCALE / math.log(BASE)  # natural-log strengths -> Elo-like points
    for k in range(1, len(true)):
        # Both are the exact MLE (observed: 1e-7 points apart); 0.01 leaves room for solver tolerances.
        assert ours[names[k]] - ours[names[0]] == pytest.approx(theirs[k] - theirs[0], abs=0.01)


def test_two_model_fit_is_the_empirical_log_odds() -> None:
    battles = [("a", "b", "a")] * 30 + [("a", "b", "b")] * 10
    ratings = fit_bt(battles, anchor="b")
    assert ratings["a"] - ratings["b"] == pytest.approx(SCALE * math.log10(3.0), abs=1e-3)


def test_expected_win() -> None:
    assert expected_win(1234.0, 1234.0) == 0.5
    assert expected_win(1400.0, 1000.0) == pytest.approx(10.0 / 11.0)
    assert expected_win(1000.0, 1400.0) == pytest.approx(1.0 / 11.0)


# --- ties and bad input --------------------------------------------------------------------------


def test_a_tie_counts_as_half_a_win() -> None:
    # 3 wins + 2 ties scores 4 of 5, exactly like 4 wins + 1 loss.
    with_ties = [("x", "y", "a")] * 3 + [("y", "x", "tie")] * 2 + [("y", "z", "a"), ("z", "y", "a"), ("x", "z", "b")]
    without = [("x", "y", "a")] * 4 + [("x", "y", "b")] + [("y", "z", "a"), ("z", "y", "a"), ("x", "z", "b")]
    fitted_ties, fitted_plain = fit_bt(with_ties), fit_bt(without)
    for name in "xyz":
        assert fitted_ties[name] == pytest.approx(fitted_plain[name], abs=1e-4)
    only_ties = fit_bt([("x", "y", "tie")] * 5)
    assert only_ties["x"] == pytest.approx(only_ties["y"], abs=1e-6)


def test_both_bad_counts_as_a_tie() -> None:
    base = [("x", "y", "a"), ("y", "z", "b"), ("z", "x", "a"), ("x", "y", "b")]
    ties = base + [("x", "y", "tie"), ("x", "z", "tie"), ("y", "z", "tie")]
    both_bad = base + [("x", "y", "both_bad"), ("x", "z", "both_bad"), ("y", "z", "tie")]
    assert fit_bt(ties) == pytest.approx(fit_bt(both_bad), abs=1e-9)
    record = {r.model: r for r in bootstrap_ratings(both_bad, rounds=5)}
    assert (record["x"].battles, record["x"].wins, record["x"].losses, record["x"].ties) == (5, 1, 2, 2)
    assert (record["y"].battles, record["y"].wins, record["y"].losses, record["y"].ties) == (5, 1, 2, 2)
    assert (record["z"].battles, record["z"].wins, record["z"].losses, record["z"].ties) == (4, 2, 0, 2)


@pytest.mark.parametrize(
    ("row", "words"),
    [
        (("x", "y", "draw"), ["battle 1", "draw", "unknown outcome"]),
        (("x", "x", "a"), ["battle 1", "'x'", "itself"]),
        (("", "y", "a"), ["battle 1", "model_a", "non-empty"]),
        (("x", "  ", "b"), ["battle 1", "model_b", "non-empty"]),
        (("x", None, "b"), ["battle 1", "model_b"]),
        (("x", "y"), ["battle 1", "expected (model_a, model_b, outcome)"]),
        ("xya", ["battle 1", "expected (model_a, model_b, outcome)"]),
    ],
)
def test_bad_battles_are_refused_with_the_row(row, words: list[str]) -> None:
    battles = [("x", "y", "a"), row, ("y", "x", "b")]
    for call in (check_battles, fit_bt, win_matrix, lambda b: bootstrap_ratings(b, rounds=2)):
        with pytest.raises(ValueError) as error:
            call(battles)
        for word in words:
            assert word in str(error.value)


def test_check_battles_returns_tuples_and_accepts_every_outcome() -> None:
    rows = [["x", "y", outcome] for outcome in OUTCOMES]
    assert check_battles(rows) == [("x", "y", outcome) for outcome in OUTCOMES]


@pytest.mark.parametrize("battles", [[], [("x", "y", "a")][:0]])
def test_no_battles(battles) -> None:
    with pytest.raises(ValueError, match="need battles between at least two models"):
        fit_bt(battles)
    with pytest.raises(ValueError, match="need battles between at least two models"):
        bootstrap_ratings(battles, rounds=2)


def test_unknown_anchor_and_bad_arguments() -> None:
    battles = [("x", "y", "a"), ("x", "y", "b")]
    with pytest.raises(ValueError, match="anchor model 'nobody' has no battles"):
        fit_bt(battles, anchor="nobody")
    with pytest.raises(ValueError, match="level"):
        bootstrap_ratings(battles, rounds=2, level=95)
    with pytest.raises(ValueError, match="rounds"):
        bootstrap_ratings(battles, rounds=0)


# --- models that never lost (or never won) -------------------------------------------------------


def test_an_undefeated_model_gets_a_finite_rating_above_the_others() -> None:
    # "champ" never lost: the unpenalised MLE would put it at +infinity.
    battles = [("champ", "y", "a")] * 10 + [("z", "champ", "b")] * 5 + [("y", "z", "a")] * 6 + [("y", "z", "b")] * 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning from a diverging solver
        ratings = fit_bt(battles)
    assert all(math.isfinite(v) for v in ratings.values())
    assert list(ratings) == ["champ", "y", "z"]
    assert ratings["champ"] - ratings["y"] < 1500.0  # finite and not absurd
    # Sensible: more evidence, higher rating; an undefeated record above the same record with one loss.
    one_loss = fit_bt(battles + [("champ", "z", "b")])
    more_wins = fit_bt(battles + [("champ", "y", "a")] * 10)
    assert one_loss["champ"] - one_loss["y"] < ratings["champ"] - ratings["y"] < more_wins["champ"] - more_wins["y"]


def test_a_model_that_never_won_stays_finite_and_last() -> None:
    battles = [("x", "y", "a"), ("x", "y", "b"), ("x", "y", "tie")] * 3 + [("x", "loser", "a")] * 4 + [("loser", "y", "b")] * 3
    ratings = fit_bt(battles)
    assert all(math.isfinite(v) for v in ratings.values())
    assert list(ratings)[-1] == "loser"
    two = fit_bt([("w", "l", "a")])  # a single battle
    assert math.isfinite(two["w"]) and two["w"] > two["l"]
    assert two["w"] + two["l"] == pytest.approx(2 * INIT)


def test_bootstrap_with_an_undefeated_model_is_finite() -> None:
    battles = [("champ", "y", "a")] * 8 + [("y", "z", "a")] * 5 + [("z", "y", "a")] * 5 + [("champ", "z", "a")] * 3
    for rating in bootstrap_ratings(battles, rounds=30, seed=2):
        assert math.isfinite(rating.lower) and math.isfinite(rating.upper)
        assert rating.lower <= rating.upper


def test_models_that_never_met_each_other_are_centred_per_group() -> None:
    battles = [("a", "b", "a"), ("a", "b", "a"), ("a", "b", "b"), ("c", "d", "a"), ("c", "d", "b")]
    ratings = fit_bt(battles)
    assert all(math.isfinite(v) for v in ratings.values())
    assert ratings["a"] > ratings["b"]
    assert ratings["c"] == pytest.approx(ratings["d"], abs=1e-6)


# --- bootstrap -----------------------------------------------------------------------------------


def test_bootstrap_is_deterministic_sorted_and_consistent() -> None:
    true = {"m0": 1000.0, "m1": 1100.0, "m2": 1200.0}
    battles = simulate(true, 600, np.random.default_rng(7))
    first = bootstrap_ratings(battles, rounds=40, seed=5)
    assert first == bootstrap_ratings(battles, rounds=40, seed=5)
    assert first != bootstrap_ratings(battles, rounds=40, seed=6)
    assert [r.rating for r in first] == sorted((r.rating for r in first), reverse=True)
    assert {r.model: r.rating for r in first} == fit_bt(battles)  # point estimate = the full fit
    for r in first:
        assert isinstance(r, Rating)
        assert r.lower < r.rating < r.upper

    models, replicates = bootstrap_replicates(battles, rounds=40, seed=5)
    assert models == sorted(true) and replicates.shape == (40, 3)
    by_model = {r.model: r for r in first}
    for k, name in enumerate(models):
        assert by_model[name].lower == pytest.approx(np.quantile(replicates[:, k], 0.025))
        assert by_model[name].upper == pytest.approx(np.quantile(replicates[:, k], 0.975))

    anchored = {r.model: r for r in bootstrap_ratings(battles, rounds=40, seed=5, anchor="m1", level=0.5)}
    assert anchored["m1"].rating == anchored["m1"].lower == anchored["m1"].upper == INIT
    assert anchored["m2"].upper - anchored["m2"].lower < by_model["m2"].upper - by_model["m2"].lower  # 50% < 95%


def test_bootstrap_intervals_cover_at_about_the_nominal_rate() -> None:
    """Coverage of the true rating difference to an anchor, over 24 simulated arenas.

    10 models (1000 to 1350), 2000 battles per arena, 50 bootstrap rounds: 216 intervals.
    Observed with these seeds: 95% intervals cover 0.963, 50% intervals 0.546 (other simulation
    seeds: 0.91-0.94 and 0.43-0.52). The bounds allow for the Monte Carlo noise of 216 correlated
    intervals and 50 rounds. The test can fail: the 50% intervals must stay far below 0.85, and
    intervals 1.4 times too wide (resampling half the battles) cover 0.995 at 95% and 0.73 at 50%.
    """
    true = {f"m{i}": float(v) for i, v in enumerate(np.linspace(1000.0, 1350.0, 10))}
    covered95 = covered50 = total = 0
    for arena in range(24):
        battles = simulate(true, 2000, np.random.default_rng(10_000 + arena))
        models, replicates = bootstrap_replicates(battles, rounds=50, seed=arena, anchor="m0")
        low95, high95 = np.nanquantile(replicates, [0.025, 0.975], axis=0)
        low50, high50 = np.nanquantile(replicates, [0.25, 0.75], axis=0)
        for k, name in enumerate(models):
            if name == "m0":
                continue
            covered95 += low95[k] <= true[name] <= high95[k]
            covered50 += low50[k] <= true[name] <= high50[k]
            total += 1
    assert total == 216
    assert 0.85 <= covered95 / total <= 0.99, covered95 / total
    assert 0.35 <= covered50 / total <= 0.6, covered50 / total


# --- win matrix ----------------------------------------------------------------------------------


def test_win_matrix_on_a_hand_made_case() -> None:
    battles = [
        ("A", "B", "a"),
        ("A", "B", "a"),
        ("B", "A", "tie"),
        ("A", "B", "b"),  # A vs B: A scores 2.5 of 4
        ("C", "A", "b"),
        ("C", "A", "b"),
        ("A", "C", "a"),
        ("C", "A", "a"),  # A vs C: A scores 3 of 4
    ]  # B and C never met
    models, wins, counts = win_matrix(battles)
    assert models == ["A", "B", "C"]
    nan = np.nan
    np.testing.assert_array_equal(wins, np.array([[nan, 0.625, 0.75], [0.375, nan, nan], [0.25, nan, nan]]))
    np.testing.assert_array_equal(counts, np.array([[0, 4, 4], [4, 0, 0], [4, 0, 0]]))
    # A tree of pairs: each difference is that pair's own log-odds.
    ratings = fit_bt(battles, anchor="A")
    assert ratings["B"] - INIT == pytest.approx(SCALE * math.log10(1.5 / 2.5), abs=1e-3)
    assert ratings["C"] - INIT == pytest.approx(SCALE * math.log10(1.0 / 3.0), abs=1e-3)


# --- choosing the next battle --------------------------------------------------------------------


def _rating(model: str, rating: float, half_width: float, battles: int = 100) -> Rating:
    return Rating(model, rating, rating - half_width, rating + half_width, battles, battles // 2, battles // 2, 0)


def test_pair_weights_prefer_new_models_and_uncertain_pairs() -> None:
    ratings = [_rating("a", 1000.0, 30.0), _rating("b", 1010.0, 30.0), _rating("c", 1400.0, 30.0), _rating("d", 1200.0, 30.0)]
    counts = {("a", "b"): 3, ("c", "a"): 2000, ("a", "d"): 50, ("b", "d"): 50, ("d", "c"): 40, ("b", "c"): 25}
    weights = pair_weights(["d", "c", "b", "a", "new", "a"], ratings, counts)

    assert set(weights) == set(itertools.combinations(["a", "b", "c", "d", "new"], 2))  # each unordered pair once
    assert all(x < y for x, y in weights)
    assert all(w > 0 for w in weights.values())
    new_pairs = {pair: w for pair, w in weights.items() if "new" in pair}
    old_pairs = {pair: w for pair, w in weights.items() if "new" not in pair}
    assert min(new_pairs.values()) > max(old_pairs.values())
    # Close and rarely fought beats well separated and fought 2000 times (counts keyed (c, a) still count).
    assert weights[("a", "b")] > 20 * weights[("a", "c")]

    # The documented formula, for one pair.
    p = expected_win(1000.0, 1010.0)
    overlap = (1030.0 - 980.0) / 60.0
    assert weights[("a", "b")] == pytest.approx((0.05 + (4 * p * (1 - p) + overlap) / 2) / math.sqrt(1 + 3))
    # A rated model with zero battles counts as new.
    fresh = pair_weights(["a", "b"], [_rating("a", 1000.0, 30.0), _rating("b", 1000.0, 0.0, battles=0)], {})
    assert fresh[("a", "b")] == pytest.approx(2.05)
    with pytest.raises(ValueError, match="at least two models"):
        pair_weights(["a", "a"], ratings, counts)


def test_more_battles_lower_the_weight_but_never_to_zero() -> None:
    ratings = [_rating("a", 1000.0, 5.0), _rating("b", 2000.0, 5.0)]  # 1000 points apart, intervals apart
    few = pair_weights(["a", "b"], ratings, {})[("a", "b")]
    many = pair_weights(["a", "b"], ratings, {("a", "b"): 10**6})[("a", "b")]
    assert 0 < many < few


def test_sample_pair_follows_the_weights_in_both_orders() -> None:
    weights = {("a", "b"): 1.0, ("a", "c"): 3.0, ("b", "c"): 6.0}
    rng = random.Random(42)
    draws = [sample_pair(weights, rng) for _ in range(20_000)]
    assert draws == [sample_pair(weights, r) for r in [random.Random(42)] for _ in range(20_000)]  # seeded
    unordered = Counter(tuple(sorted(d)) for d in draws)
    for pair, w in weights.items():
        # Binomial standard deviation at 20,000 draws is at most 0.0035: allow 4 of them.
        assert unordered[pair] / len(draws) == pytest.approx(w / 10.0, abs=0.014)
    ordered = Counter(draws)
    for x, y in weights:
        assert ordered[(x, y)] / unordered[(x, y)] == pytest.approx(0.5, abs=0.05)  # neither always on the left


def test_sample_pair_refuses_empty_or_bad_weights() -> None:
    rng = random.Random(0)
    with pytest.raises(ValueError, match="no pairs"):
        sample_pair({}, rng)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="positive"):
            sample_pair({("a", "b"): 1.0, ("a", "c"): bad}, rng)


def test_importing_ratings_does_not_import_torch() -> None:
    """The web server imports this module; torch would cost seconds and memory there."""
    code = "import sys, rlhf.ratings; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
