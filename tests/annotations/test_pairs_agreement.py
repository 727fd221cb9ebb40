"""Pair strategies, aggregation across annotators, and agreement against hand-computed cases."""

from __future__ import annotations

import pytest
from scipy.stats import kendalltau

from annotations.agreement import compute_agreement, kendall_tau_b, krippendorff_alpha_nominal, pair_verdicts
from annotations.pairs import Judgement, aggregate, judgements, ranking_pairs

RANKS = {10: 1, 11: 2, 12: 2, 13: 3}  # 10 best, 11 and 12 tied, 13 worst


def test_all_pairs() -> None:
    assert sorted(ranking_pairs(RANKS, "all_pairs")) == [(10, 11, 1), (10, 12, 1), (10, 13, 2), (11, 13, 1), (12, 13, 1)]


def test_best_vs_rest() -> None:
    assert sorted(ranking_pairs(RANKS, "best_vs_rest")) == [(10, 11, 1), (10, 12, 1), (10, 13, 2)]


def test_adjacent() -> None:
    assert sorted(ranking_pairs(RANKS, "adjacent")) == [(10, 11, 1), (10, 12, 1), (11, 13, 1), (12, 13, 1)]


def test_ties_only_when_asked() -> None:
    assert (11, 12, 0) not in ranking_pairs(RANKS, "all_pairs")
    assert (11, 12, 0) in ranking_pairs(RANKS, "all_pairs", include_ties=True)
    assert (11, 12, 0) in ranking_pairs(RANKS, "adjacent", include_ties=True)
    assert ranking_pairs({1: 1, 2: 1}, "all_pairs") == []
    with pytest.raises(ValueError, match="unknown pair strategy"):
        ranking_pairs(RANKS, "random")


def test_strict_order_pair_counts() -> None:
    strict = {i: i for i in range(1, 6)}  # k = 5
    assert len(ranking_pairs(strict, "all_pairs")) == 10
    assert len(ranking_pairs(strict, "best_vs_rest")) == 4
    assert len(ranking_pairs(strict, "adjacent")) == 4


def test_majority_and_per_annotator() -> None:
    votes = [
        Judgement(1, "ana", 5, 6, 1),
        Judgement(1, "bob", 5, 6, 2),
        Judgement(1, "cy", 6, 5, 1),
        Judgement(2, "ana", 7, 8, 1),
        Judgement(2, "bob", 8, 7, 1),  # an even split: dropped by majority
    ]
    [row] = aggregate(votes, "majority")
    assert (row.prompt_id, row.chosen, row.rejected, row.margin, row.n_annotators) == (1, 5, 6, 1.5, 3)
    assert row.agreement == pytest.approx(2 / 3)
    tie_rows = aggregate(votes, "majority", include_ties=True)
    assert [(r.prompt_id, r.margin) for r in tie_rows] == [(1, 1.5), (2, 0.0)]
    per = aggregate(votes, "per_annotator")
    assert len(per) == 5 and {r.annotator for r in per} == {"ana", "bob", "cy"}
    cy = next(r for r in per if r.annotator == "cy")
    assert (cy.chosen, cy.agreement) == (6, pytest.approx(1 / 3))


def test_judgements_from_rankings() -> None:
    items = judgements([(1, "ana", {1: 1, 2: 2}), (1, "bob", {1: 2, 2: 1})], "all_pairs", False)
    assert items == [Judgement(1, "ana", 1, 2, 1), Judgement(1, "bob", 2, 1, 1)]


@pytest.mark.parametrize(
    "x, y",
    [
        ([1, 2, 3, 4], [1, 2, 3, 4]),
        ([1, 2, 3, 4], [4, 3, 2, 1]),
        ([1, 2, 2, 3], [1, 3, 2, 2]),
        ([1, 1, 2, 3, 3], [2, 1, 3, 3, 1]),
        ([3, 1, 2, 2, 4, 1], [2, 1, 1, 3, 4, 2]),
    ],
)
def test_kendall_tau_b_matches_scipy(x, y) -> None:
    assert kendall_tau_b(x, y) == pytest.approx(kendalltau(x, y, variant="b").statistic)


def test_kendall_tau_b_by_hand_and_undefined() -> None:
    # x = (1, 2, 2), y = (1, 1, 2): pairs (0,1) tied in y, (0,2) concordant, (1,2) tied in x.
    # tau_b = (1 - 0) / sqrt((1 + 0 + 1) * (1 + 0 + 1)) = 0.5
    assert kendall_tau_b([1, 2, 2], [1, 1, 2]) == pytest.approx(0.5)
    assert kendall_tau_b([1, 1, 1], [1, 2, 3]) is None


def test_krippendorff_alpha_reference_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", nominal data:
    # 4 coders, 12 units with missing values; alpha = 0.743.
    n = None
    coders = {
        "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
        "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
        "C": [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
        "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
    }
    units = {u: {c: v[u] for c, v in coders.items() if v[u] is not None} for u in range(12)}
    assert krippendorff_alpha_nominal(units) == pytest.approx(0.743, abs=5e-4)


def test_krippendorff_alpha_by_hand() -> None:
    # Two coders, four units: (a,a) (a,b) (b,b) (b,b). Coincidences: o_aa=2, o_ab=o_ba=1, o_bb=4;
    # n_a=3, n_b=5, n=8. alpha = 1 - (n-1) * D_o / sum n_c n_k = 1 - 7 * 2 / (2 * 3 * 5) = 8/15.
    units = {1: {"x": "a", "y": "a"}, 2: {"x": "a", "y": "b"}, 3: {"x": "b", "y": "b"}, 4: {"x": "b", "y": "b"}}
    assert krippendorff_alpha_nominal(units) == pytest.approx(8 / 15)
    assert krippendorff_alpha_nominal({1: {"x": "a", "y": "a"}}) is None  # no variation: undefined
    assert krippendorff_alpha_nominal({1: {"x": "a"}}) is None  # no unit judged twice


def test_pair_verdicts() -> None:
    assert pair_verdicts({3: 2, 1: 1, 2: 2}) == {(1, 2): "a", (1, 3): "a", (2, 3): "tie"}


def test_agreement_report() -> None:
    rankings = [
        (1, "ana", {1: 1, 2: 2, 3: 3}),
        (1, "bob", {1: 1, 2: 2, 3: 3}),
        (1, "cy", {1: 3, 2: 2, 3: 1}),
        (2, "ana", {4: 1, 5: 2}),
        (2, "bob", {4: 1, 5: 2}),
        (3, "ana", {6: 1, 7: 2}),  # ranked once: no agreement figure for this prompt
    ]
    report = compute_agreement(rankings)
    # prompt 1: tau(ana,bob)=1, tau(ana,cy)=-1, tau(bob,cy)=-1 -> -1/3; prompt 2: 1
    assert report.per_prompt == {1: pytest.approx(-1 / 3), 2: pytest.approx(1.0)}
    assert report.mean_tau_b == pytest.approx((-1 / 3 + 1) / 2)
    assert report.prompts_with_overlap == 2
    # cy disagrees with the ana+bob majority on all three pairs of prompt 1
    assert report.reliability["cy"] == (0.0, 3)
    # ana on prompt 1: the others (bob, cy) split evenly, so no majority to compare with;
    # on prompt 2 bob alone is the others' majority and agrees: one unit, rate 1.
    assert report.reliability["ana"] == (1.0, 1)
    assert report.alpha is not None and report.alpha < 0.5
