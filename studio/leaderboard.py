"""What the Evaluate screen shows: the arena leaderboard, judged results, and the levels board.

- :func:`arena_board`: Bradley-Terry ratings of the arena's contenders from the blind votes
  (``rlhf.ratings``, fitted as Chatbot Arena does), with bootstrap intervals, battles and
  wins / ties / losses, and the pairwise win-rate matrix.
- :func:`judged_board`: the latest finished ``eval`` run's result per contender (its judge,
  baseline, win rate with interval, length-controlled rate and reply length).
- :func:`levels_board`: every registered causal LM (and every prompted variant that has been
  evaluated) by tier: L1 prompted base, L2 instruction-tuned, L3 RLHF (PPO) / RLAIF / DPO;
  with what it cost (training time, device, trained parameters, examples or pairs) and what
  it bought (arena rating, judged win rate against the base, the run's own judged check).

All read-only; the screen calls these after checking the caller may read results.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from annotations.arena import battle_outcomes
from rlhf.evaluation import read_results
from rlhf.ratings import Rating, bootstrap_ratings, win_matrix
from rlhf.registry import DEFAULT_CHAT_MODEL
from studio.charts import heatmap, interval_chart
from studio.context import StudioContext

# Below this many battles a model's bootstrap interval says little (one vote resamples to itself).
PROVISIONAL_BATTLES = 10


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def interval_text(r: Rating) -> str:
    if r.battles < PROVISIONAL_BATTLES:
        return f"provisional ({plural(r.battles, 'battle')})"
    return f"{r.lower:.0f} to {r.upper:.0f}"


@dataclass
class ArenaBoard:
    ratings: list[Rating]
    frame: pd.DataFrame
    chart: str
    matrix: str
    battles: int


def arena_board(ctx: StudioContext, rounds: int = 200) -> ArenaBoard:
    outcomes = battle_outcomes(ctx.store)
    columns = ["rank", "contender", "rating", "95% interval", "battles", "wins / ties / losses"]
    models = {m for o in outcomes for m in o[:2]}
    if len(models) < 2:
        empty = pd.DataFrame([], columns=columns)
        return ArenaBoard(
            [], empty, interval_chart("Arena rating (Bradley-Terry, 95% interval)", []), heatmap("", [], None, None), len(outcomes)
        )
    anchor = DEFAULT_CHAT_MODEL if DEFAULT_CHAT_MODEL in models else None
    ratings = bootstrap_ratings(outcomes, rounds=rounds, seed=0, anchor=anchor)
    rows = []
    for i, r in enumerate(ratings, 1):
        rows.append([i, r.model, round(r.rating), interval_text(r), r.battles, f"{r.wins} / {r.ties} / {r.losses}"])
    names, wins, counts = win_matrix(outcomes)
    tiers = {row["model"]: row["tier"] for row in _level_rows(ctx)}
    chart = interval_chart(
        "Arena rating (Bradley-Terry, Elo scale, 95% bootstrap interval)",
        [(r.model, r.rating, r.lower, r.upper, tiers.get(r.model, "")) for r in ratings],
        reference=1000.0 if anchor else None,
    )
    matrix = heatmap("Share of battles the row won against the column (ties count half)", names, wins, counts)
    return ArenaBoard(ratings, pd.DataFrame(rows, columns=columns), chart, matrix, len(outcomes))


def latest_judged(ctx: StudioContext) -> dict[str, dict]:
    """contender label -> its newest finished judged result (with the run id and judge)."""
    found: dict[str, dict] = {}
    for run in ctx.launcher.runs("eval"):  # newest first
        if run.status().get("state") != "finished":
            continue
        results = read_results(run.path) or {}
        for row in results.get("contenders", []):
            if row["contender"] not in found:
                found[row["contender"]] = {**row, "run": run.id, "judge": results.get("judge", ""), "warnings": results.get("warnings", [])}
    return found


def judged_board(ctx: StudioContext) -> pd.DataFrame:
    columns = ["contender", "against", "judge", "win rate [95% CI]", "length-controlled", "words (baseline)", "run", "warning"]
    rows = []
    for label, r in latest_judged(ctx).items():
        warned = [w for w in r["warnings"] if label in w]
        rows.append(
            [
                label,
                r["baseline"],
                r["judge"],
                f"{r['win_rate']:.3f} [{r['win_rate_low']:.3f}, {r['win_rate_high']:.3f}]",
                f"{r['lc_win_rate']:.3f}",
                f"{r['mean_words']:.0f} ({r['baseline_mean_words']:.0f})",
                r["run"],
                "judge in lineage" if warned else "",
            ]
        )
    return pd.DataFrame(rows, columns=columns)


# -- the levels board --------------------------------------------------------------------------
def tier_of(lineage: dict, template: str = "") -> tuple[str, str]:
    """(tier, method) from a model's lineage."""
    method = str(lineage.get("method", ""))
    run = str(lineage.get("run", ""))
    kind = run.split("-", 1)[0] if run else ""
    if kind == "ppo" or (lineage.get("rewards") and kind not in ("grpo", "rloo") and method not in ("grpo", "rloo")):
        judged = any(s.get("type") == "judge" for s in lineage.get("rewards") or [])
        return ("L3 RLAIF" if judged else "L3 RLHF"), f"PPO ({method or 'lora'})" + (", AI judge reward" if judged else ", reward model")
    if kind in ("grpo", "rloo") or method in ("grpo", "rloo"):
        judged = any(s.get("type") == "judge" for s in lineage.get("rewards") or [])
        name = (kind or method).upper()
        return ("L3 RLAIF" if judged else "L3 RLHF"), f"{name}" + (", AI judge reward" if judged else ", reward model")
    if kind == "dpo" or method == "dpo":
        return "L3 DPO", "DPO on preference pairs"
    if kind == "kto" or method == "kto":
        return "L3 KTO", "KTO on replies marked good or bad"
    if kind == "sft" or lineage.get("base_model"):
        return "L2 instruction-tuned", f"SFT ({method or 'lora'})"
    return ("L1 prompted", f"template {template}") if template else ("L1 base", "prompting only")


def _run_cost(ctx: StudioContext, run_id: str) -> dict:
    try:
        run = ctx.launcher.get(run_id)
    except ValueError:
        return {}
    metrics, status = run.metrics(), run.status()
    cost = {
        k: metrics.get(k)
        for k in (
            "train_seconds",
            "device",
            "trainable_params",
            "judged_win_rate_vs_start",
            "judged_win_rate_vs_start_low",
            "judged_win_rate_vs_start_high",
        )
    }
    cost["data"] = next(
        (
            f"{metrics[k]:,} {label}"
            for k, label in (("train_examples", "examples"), ("train_pairs", "pairs"), ("episodes", "episodes"))
            if metrics.get(k)
        ),
        "",
    )
    if cost.get("train_seconds") is None and status.get("started") and status.get("ended"):
        from datetime import datetime

        try:
            cost["train_seconds"] = (datetime.fromisoformat(status["ended"]) - datetime.fromisoformat(status["started"])).total_seconds()
        except ValueError:
            pass
    return cost


def _level_rows(ctx: StudioContext) -> list[dict]:
    """One dict per model (and evaluated prompted variant), before quality is joined in."""
    rows = []
    for entry in ctx.registry.entries("causal-lm"):
        tier, method = tier_of(entry.lineage)
        cost = _run_cost(ctx, entry.lineage["run"]) if entry.lineage.get("run") else {"data": "pretrained (no training here)"}
        parent = entry.lineage.get("policy") or entry.lineage.get("base_model") or ""
        rows.append({"model": entry.name, "tier": tier, "method": method, "from": parent, **cost})
    return rows


def _fmt_seconds(seconds) -> str:
    if not seconds:
        return ""
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _fmt_params(n) -> str:
    if not n:
        return ""
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def levels_board(ctx: StudioContext, arena: ArenaBoard | None = None) -> tuple[pd.DataFrame, str]:
    """The levels table and its chart: cost and quality of every model by tier."""
    rows = _level_rows(ctx)
    judged = latest_judged(ctx)
    known = {r["model"] for r in rows}
    for label in judged:  # prompted variants (model + template) that have been evaluated
        if label not in known and " + template " in label:
            model, _, template = label.partition(" + template ")
            rows.append({"model": label, "tier": "L1 prompted", "method": f"template {template}", "from": model})
    ratings = {r.model: r for r in (arena.ratings if arena else [])}
    table = []
    chart_rows = []
    order = {"L1": 0, "L2": 1, "L3": 2}
    for row in sorted(rows, key=lambda r: (order.get(r["tier"][:2], 3), r["model"])):
        rating = ratings.get(row["model"])
        j = judged.get(row["model"])
        check = row.get("judged_win_rate_vs_start")
        # what it bought first (the page is narrow), then what it cost
        table.append(
            [
                row["tier"],
                row["model"],
                f"{rating.rating:.0f} ({interval_text(rating)}), {plural(rating.battles, 'battle')}" if rating else "",
                f"{j['win_rate']:.2f} [{j['win_rate_low']:.2f}, {j['win_rate_high']:.2f}] vs {j['baseline']}, {j['mean_words']:.0f} words"
                if j
                else "",
                f"{check:.2f} [{row['judged_win_rate_vs_start_low']:.2f}, {row['judged_win_rate_vs_start_high']:.2f}]"
                if check is not None
                else "",
                row["method"],
                _fmt_seconds(row.get("train_seconds")),
                row.get("device") or "",
                _fmt_params(row.get("trainable_params")),
                row.get("data") or "",
                row["from"],
            ]
        )
        if j:
            chart_rows.append((row["model"], j["win_rate"], j["win_rate_low"], j["win_rate_high"], row["tier"]))
    columns = [
        "tier",
        "model",
        "arena rating (95% interval)",
        "judged win rate [95% CI]",
        "run's check vs start",
        "method",
        "training time",
        "device",
        "trained parameters",
        "data",
        "trained from",
    ]
    chart = interval_chart("Judged win rate against the baseline, by tier (95% interval; 0.5 = no better)", chart_rows, reference=0.5)
    return pd.DataFrame(table, columns=columns), chart
