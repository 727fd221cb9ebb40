"""The studio's own share of one submit-and-load-next, without HTTP: bench.annotation_load's server side.

    .venv/bin/python -m bench.ranking_handler [--calls 300] [--profile]

Builds the ranking screen on a fresh database shaped like bench.annotation_load's (a pairwise
project of 2,450 prompts, 30 annotators), then calls the "A is better" event's function the way
Gradio does (state, rationale, request), one annotator after another, and reports the median
time per call, the DuckDB statements per call (transactions, locked reads, lock-free reads)
and the size of the returned updates as JSON. ``--profile`` prints where the time goes (cProfile).
Prints only; the figures go into the annotation load notes.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

ANNOTATORS = 30


class _Counting:
    """A cursor that counts the statements it runs."""

    def __init__(self, cur, counts: dict) -> None:
        self._cur, self._counts = cur, counts

    def execute(self, *args, **kwargs):
        self._counts["statements"] += 1
        return self._cur.execute(*args, **kwargs)

    def executemany(self, *args, **kwargs):
        self._counts["statements"] += 1
        return self._cur.executemany(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._cur, name)


def count_statements(store, counts: dict) -> None:
    """Wrap this store's entry points so that every statement is counted in ``counts``."""
    transaction, query, read = store.transaction, store.query, store.read

    @contextmanager
    def counted_transaction():
        counts["transactions"] += 1
        with transaction() as cur:
            yield _Counting(cur, counts)

    def counted_query(*args, **kwargs):
        counts["queries"] += 1
        return query(*args, **kwargs)

    def counted_read(*args, **kwargs):
        counts["reads"] += 1
        return read(*args, **kwargs)

    store.transaction, store.query, store.read = counted_transaction, counted_query, counted_read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    from bench.annotation_load import prepare
    from studio import ranking
    from studio.context import StudioContext

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "handler.duckdb"
        prepare(db, ANNOTATORS, 2450)
        ctx = StudioContext.open(db, home=Path(tmp) / "home", device="cpu")
        try:
            fns = {f.api_name: f for f in ranking.build(ctx).fns.values() if f.fn is not None}
            opened, pair = fns["open_project"], fns["pairwise_a"]
            state_at = [type(c).__name__ for c in pair.outputs].index("State")
            users = [SimpleNamespace(username=f"annotator{n:02d}") for n in range(ANNOTATORS)]
            states = [opened.fn("load", request=u)[state_at] for u in users]
            counts = {"transactions": 0, "queries": 0, "reads": 0, "statements": 0}
            count_statements(ctx.store, counts)
            took, sizes = [], []
            profile = cProfile.Profile() if args.profile else None
            for n in range(args.calls):
                i = n % ANNOTATORS
                t0 = time.perf_counter()
                if profile:
                    profile.enable()
                out = pair.fn(states[i], "", request=users[i])
                if profile:
                    profile.disable()
                took.append(time.perf_counter() - t0)
                states[i] = out[state_at]
                sizes.append(len(json.dumps([o if isinstance(o, str | dict | None) else repr(o) for o in out], default=str)))
        finally:
            ctx.close()
    per = {k: round(v / args.calls, 1) for k, v in counts.items()}
    statements = per["statements"] + per["queries"] + per["reads"]
    print(f"{args.calls} pairwise submit-and-load-next calls, in process (no HTTP)")
    print(f"median {1000 * statistics.median(took):.2f} ms, p95 {1000 * sorted(took)[int(0.95 * (len(took) - 1))]:.2f} ms per call")
    print(
        f"per call: {per['transactions']} transactions ({per['statements']} statements), {per['queries']} locked reads, "
        f"{per['reads']} lock-free reads: {statements:.1f} DuckDB statements"
    )
    print(f"updates returned: ~{statistics.median(sizes):,.0f} characters as text")
    if profile:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
