"""Turn k-way rankings (ties allowed) into preference pairs, and combine annotators.

Pair strategies (1 is the best rank; a pair is (chosen, rejected, margin), margin being the
rank difference):

- ``all_pairs``: every two replies with different ranks. k(k-1)/2 pairs for a strict order;
  the most data, and the pairs of one ranking are correlated.
- ``best_vs_rest``: the best-ranked replies against every reply ranked below them. k-1 pairs
  for a strict order; what "pick the best reply" interfaces produce.
- ``adjacent``: each rank level against the next one down. k-1 pairs for a strict order; only
  the finest distinctions, no implied transitive pairs.

Ties make no pair unless ``include_ties`` is set; then each tied pair is one record with
margin 0, ordered by reply id. Across annotators, ``majority`` keeps one row per pair with the
side most annotators chose, a tie being a vote too (a split without a strict winner is dropped,
or kept as a tie with ``include_ties``), and records the share who agreed;
``per_annotator`` keeps one row per annotator's pair.

Feed ``aggregate`` the judgements made with ties (``judgements(..., include_ties=True)``) so
that an annotator who tied two replies counts against a majority for either side.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations

STRATEGIES = ("all_pairs", "best_vs_rest", "adjacent")
AGGREGATES = ("majority", "per_annotator")


@dataclass(frozen=True)
class Judgement:
    """One annotator's preference between two replies of a prompt."""

    prompt_id: int
    annotator: str
    chosen: int
    rejected: int
    margin: int  # 0 for a tie


@dataclass(frozen=True)
class PairRow:
    prompt_id: int
    chosen: int
    rejected: int
    margin: float
    agreement: float  # share of the annotators who judged this pair that agree with this row
    n_annotators: int
    annotator: str | None  # set for per_annotator rows


def ranking_pairs(ranks: Mapping[int, int], strategy: str = "all_pairs", include_ties: bool = False) -> list[tuple[int, int, int]]:
    """(chosen, rejected, margin) pairs of one ranking; ties as margin-0 pairs if asked."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pair strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    levels = sorted(set(ranks.values()))
    by_level = {lv: sorted(r for r, v in ranks.items() if v == lv) for lv in levels}
    pairs: list[tuple[int, int, int]] = []
    if strategy == "all_pairs":
        ordered = [(hi, lo) for hi, lo in combinations(levels, 2)]
    elif strategy == "best_vs_rest":
        ordered = [(levels[0], lo) for lo in levels[1:]]
    else:
        ordered = list(zip(levels, levels[1:], strict=False))
    for hi, lo in ordered:
        pairs += [(a, b, lo - hi) for a in by_level[hi] for b in by_level[lo]]
    if include_ties:
        tie_levels = levels[:1] if strategy == "best_vs_rest" else levels
        for lv in tie_levels:
            pairs += [(a, b, 0) for a, b in combinations(by_level[lv], 2)]
    return pairs


def judgements(rankings: Iterable[tuple[int, str, Mapping[int, int]]], strategy: str, include_ties: bool) -> list[Judgement]:
    """All annotators' pairs from (prompt id, annotator, ranks) triples."""
    return [Judgement(pid, who, a, b, m) for pid, who, ranks in rankings for a, b, m in ranking_pairs(ranks, strategy, include_ties)]


def aggregate(items: list[Judgement], how: str = "majority", include_ties: bool = False) -> list[PairRow]:
    """Rows for a snapshot, sorted by prompt and reply ids."""
    if how not in AGGREGATES:
        raise ValueError(f"unknown aggregation {how!r}; choose one of {', '.join(AGGREGATES)}")
    groups: dict[tuple[int, int, int], list[Judgement]] = defaultdict(list)
    for j in items:
        groups[(j.prompt_id, min(j.chosen, j.rejected), max(j.chosen, j.rejected))].append(j)
    rows: list[PairRow] = []
    for (pid, a, b), votes in sorted(groups.items()):
        a_wins = [v for v in votes if v.margin > 0 and v.chosen == a]
        b_wins = [v for v in votes if v.margin > 0 and v.chosen == b]
        ties = [v for v in votes if v.margin == 0]
        n = len(votes)
        if how == "per_annotator":
            for v in sorted(votes, key=lambda v: v.annotator):
                if v.margin == 0 and not include_ties:
                    continue
                side = ties if v.margin == 0 else a_wins if v.chosen == a else b_wins
                rows.append(PairRow(pid, v.chosen, v.rejected, float(v.margin), len(side) / n, n, v.annotator))
            continue
        best = max(len(a_wins), len(b_wins), len(ties))
        leaders = [side for side in (a_wins, b_wins, ties) if len(side) == best]
        if len(leaders) == 1 and leaders[0] is not ties:
            win = leaders[0]
            rows.append(PairRow(pid, win[0].chosen, win[0].rejected, sum(v.margin for v in win) / len(win), len(win) / n, n, None))
        elif include_ties and (ties and best == len(ties) or len(a_wins) == len(b_wins)):
            rows.append(PairRow(pid, a, b, 0.0, max(len(ties), len(a_wins)) / n, n, None))
    return rows
