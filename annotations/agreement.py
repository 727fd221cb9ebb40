"""Agreement between annotators: Kendall's tau-b, Krippendorff's alpha, reliability.

- Per prompt: the mean Kendall's tau-b over every two annotators who ranked it (1 = the same
  order, -1 = reversed; ties handled by the tau-b correction; undefined when either ranking is
  all one tie).
- Per project: the mean of the prompts' tau-b, and Krippendorff's alpha (nominal) over the
  pairwise preferences: each reply pair of a prompt is a unit, each annotator's verdict on it
  (first better, second better, tie) a value.
- Per annotator: reliability, the share of their pairwise verdicts that match the majority of
  the *other* annotators on the same pair (units with no strict majority are left out).

    report = project_agreement(store, project_id)
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from annotations.store import Store


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b of two equally long score lists; None where it is undefined."""
    if len(x) != len(y):
        raise ValueError("both rankings must score the same items")
    concordant = discordant = ties_x = ties_y = 0
    for i, j in combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif (dx > 0) == (dy > 0):
            concordant += 1
        else:
            discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return None if denom == 0 else (concordant - discordant) / denom


def krippendorff_alpha_nominal(units: Mapping[object, Mapping[str, object]]) -> float | None:
    """Krippendorff's alpha for nominal values: units -> {coder: value}; None if undefined."""
    coincidence: Counter = Counter()
    for values in units.values():
        vals = list(values.values())
        m = len(vals)
        if m < 2:
            continue  # a unit judged once carries no information about agreement
        for i, j in ((i, j) for i in range(m) for j in range(m) if i != j):
            coincidence[(vals[i], vals[j])] += 1 / (m - 1)
    totals: Counter = Counter()
    for (c, _), w in coincidence.items():
        totals[c] += w
    n = sum(totals.values())
    if n <= 1:
        return None
    observed = sum(w for (c, k), w in coincidence.items() if c != k)
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k)
    if expected == 0:
        return None  # every value is the same: agreement is perfect but alpha is undefined
    return 1 - (n - 1) * observed / expected


def pair_verdicts(ranks: Mapping[int, int]) -> dict[tuple[int, int], str]:
    """For every reply pair (a < b by id): 'a' (a ranked better), 'b', or 'tie'."""
    out = {}
    for a, b in combinations(sorted(ranks), 2):
        out[(a, b)] = "tie" if ranks[a] == ranks[b] else "a" if ranks[a] < ranks[b] else "b"
    return out


@dataclass
class AgreementReport:
    per_prompt: dict[int, float | None] = field(default_factory=dict)  # mean tau-b, prompts ranked by 2+
    mean_tau_b: float | None = None
    alpha: float | None = None
    reliability: dict[str, tuple[float | None, int]] = field(default_factory=dict)  # name -> (rate, units)
    prompts_with_overlap: int = 0

    def as_dict(self) -> dict:
        return {
            "mean_kendall_tau_b": self.mean_tau_b,
            "krippendorff_alpha": self.alpha,
            "prompts_with_overlap": self.prompts_with_overlap,
            "reliability": {k: {"agreement_with_majority": r, "units": n} for k, (r, n) in self.reliability.items()},
        }


def compute_agreement(rankings: Sequence[tuple[int, str, Mapping[int, int]]]) -> AgreementReport:
    """Agreement figures from (prompt id, annotator, ranks) triples (submitted rankings)."""
    by_prompt: dict[int, dict[str, Mapping[int, int]]] = defaultdict(dict)
    for pid, who, ranks in rankings:
        by_prompt[pid][who] = ranks
    report = AgreementReport()
    units: dict[tuple[int, int, int], dict[str, str]] = {}
    for pid, ranked in by_prompt.items():
        if len(ranked) >= 2:
            taus = []
            for (_, r1), (_, r2) in combinations(sorted(ranked.items()), 2):
                common = sorted(set(r1) & set(r2))
                tau = kendall_tau_b([r1[i] for i in common], [r2[i] for i in common]) if len(common) >= 2 else None
                if tau is not None:
                    taus.append(tau)
            report.per_prompt[pid] = sum(taus) / len(taus) if taus else None
        for who, ranks in ranked.items():
            for pair, verdict in pair_verdicts(ranks).items():
                units.setdefault((pid, *pair), {})[who] = verdict
    report.prompts_with_overlap = len(report.per_prompt)
    defined = [t for t in report.per_prompt.values() if t is not None]
    report.mean_tau_b = sum(defined) / len(defined) if defined else None
    report.alpha = krippendorff_alpha_nominal(units)
    hits: Counter = Counter()
    seen: Counter = Counter()
    for verdicts in units.values():
        for who, verdict in verdicts.items():
            others = Counter(v for w, v in verdicts.items() if w != who)
            if not others:
                continue
            (top, count), *rest = others.most_common()
            if rest and rest[0][1] == count:
                continue  # no strict majority among the others
            seen[who] += 1
            hits[who] += verdict == top
    annotators = sorted({who for ranked in by_prompt.values() for who in ranked})
    report.reliability = {w: (hits[w] / seen[w] if seen[w] else None, seen[w]) for w in annotators}
    return report


def submitted_rankings(store: Store, project_id: int | None = None) -> list[tuple[int, str, dict[int, int]]]:
    """(prompt id, annotator name, ranks) of every submitted ranking, optionally of one project."""
    sql = (
        "SELECT r.prompt_id, a.name, r.ranks FROM rankings r JOIN annotators a ON a.id = r.annotator_id "
        "JOIN prompts p ON p.id = r.prompt_id WHERE r.status = 'submitted'"
    )
    params: list = []
    if project_id is not None:
        sql += " AND p.project_id = ?"
        params.append(project_id)
    return [
        (pid, who, {int(k): v for k, v in json.loads(ranks).items()}) for pid, who, ranks in store.query(sql + " ORDER BY r.id", params)
    ]


def project_agreement(store: Store, project_id: int) -> AgreementReport:
    return compute_agreement(submitted_rankings(store, project_id))
