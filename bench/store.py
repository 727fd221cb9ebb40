"""Store throughput: rankings submitted per second from 8 threads, and snapshot time.

    .venv/bin/python -m bench.store [--threads 8] [--per-thread 200] [--snapshot-rankings 10000]

1. 8 threads share one Store (as Gradio's workers do); each loops: next prompt from the
   queue, submit a ranking with a fresh idempotency key. Reported: submissions per second
   (wall clock), and p50/p95 latency of next + submit.
2. 10,000 submitted rankings (5,000 prompts x 2 annotators, k = 2; inserted in bulk, not
   timed) are frozen into a snapshot (all pairs, majority, with agreement figures);
   the median of 3 runs is reported.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

from annotations.accounts import add_annotator
from annotations.queue import next_prompt, submit_ranking
from annotations.snapshot import create_snapshot
from annotations.store import Store
from bench.common import median, write_result


def submissions(store: Store, threads: int, per_thread: int) -> dict:
    pid = store.create_project("load", k=2, min_submitted=threads)
    with store.transaction() as cur:
        cur.execute("INSERT INTO prompts (project_id, text) SELECT ?, 'prompt ' || i FROM range(?) t(i)", [pid, per_thread])
        cur.execute(
            "INSERT INTO replies (prompt_id, text, model) "
            "SELECT p.id, 'reply ' || j, 'bench' FROM prompts p, range(2) t(j) WHERE p.project_id = ?",
            [pid],
        )
    people = [add_annotator(store, f"bench{n}", "correct-horse") for n in range(threads)]
    latencies: list[list[float]] = [[] for _ in people]
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for _ in range(per_thread):
                t0 = time.perf_counter()
                item = next_prompt(store, pid, people[n])
                ranks = {item.replies[0].id: 1, item.replies[1].id: 2}
                submit_ranking(store, people[n], item.prompt.id, ranks, key=str(uuid.uuid4()))
                latencies[n].append(time.perf_counter() - t0)
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - start
    if failures:
        raise failures[0]
    stored = store.query(
        "SELECT count(*) FROM rankings WHERE status = 'submitted' AND prompt_id IN (SELECT id FROM prompts WHERE project_id = ?)", [pid]
    )[0][0]
    flat = sorted(x for lat in latencies for x in lat)
    return {
        "threads": threads,
        "submissions": len(flat),
        "stored": stored,
        "seconds": round(wall, 2),
        "rankings_per_s": round(len(flat) / wall, 1),
        "p50_ms": round(1000 * flat[len(flat) // 2], 1),
        "p95_ms": round(1000 * flat[int(len(flat) * 0.95)], 1),
    }


def snapshot_time(store: Store, root: Path, rankings: int, repeats: int) -> dict:
    prompts = rankings // 2
    pid = store.create_project("snap", k=2, min_submitted=2)
    a, b = (add_annotator(store, f"snap{n}", "correct-horse") for n in range(2))
    with store.transaction() as cur:
        cur.execute("INSERT INTO prompts (project_id, text) SELECT ?, 'prompt ' || i FROM range(?) t(i)", [pid, prompts])
        cur.execute(
            "INSERT INTO replies (prompt_id, text) "
            "SELECT p.id, 'reply ' || j || ' to ' || p.id FROM prompts p, range(2) t(j) WHERE p.project_id = ?",
            [pid],
        )
        # Annotator a prefers the first reply everywhere; b agrees on 70% of prompts.
        for who, agree in ((a, 100), (b, 70)):
            cur.execute(
                """INSERT INTO rankings (prompt_id, annotator_id, status, ranks, submitted)
                   SELECT p.id, ?, 'submitted',
                          json_object(CAST(min(r.id) AS VARCHAR), CASE WHEN p.id % 100 < ? THEN 1 ELSE 2 END,
                                      CAST(max(r.id) AS VARCHAR), CASE WHEN p.id % 100 < ? THEN 2 ELSE 1 END),
                          current_timestamp
                   FROM prompts p JOIN replies r ON r.prompt_id = p.id WHERE p.project_id = ? GROUP BY p.id""",
                [who, agree, agree, pid],
            )
    times = []
    info = None
    for n in range(repeats):
        store.query("DELETE FROM snapshots")  # so each run does the whole job, not the reuse shortcut
        t0 = time.perf_counter()
        info = create_snapshot(store, root / f"run{n}", project="snap")
        times.append(time.perf_counter() - t0)
    return {
        "rankings": info.counts["rankings"],
        "pairs": info.counts["pairs"],
        "seconds_median": round(median(times), 2),
        "seconds_all": [round(t, 2) for t in times],
        "krippendorff_alpha": round(info.manifest["agreement"]["krippendorff_alpha"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--per-thread", type=int, default=200)
    parser.add_argument("--snapshot-rankings", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        sub = submissions(store, args.threads, args.per_thread)
        snap = snapshot_time(store, Path(tmp) / "snapshots", args.snapshot_rankings, args.repeats)
        store.close()
    table = [
        (f"rankings/s, {sub['threads']} threads (next + submit)", str(sub["rankings_per_s"])),
        ("latency p50 / p95 (ms)", f"{sub['p50_ms']} / {sub['p95_ms']}"),
        ("acknowledged / stored", f"{sub['submissions']} / {sub['stored']}"),
        (f"snapshot of {snap['rankings']} rankings (s, median)", str(snap["seconds_median"])),
    ]
    print(f"{'measure':<46}{'value':>14}")
    for name, value in table:
        print(f"{name:<46}{value:>14}")
    path = write_result("store", {"command": "python -m bench.store", "submissions": sub, "snapshot": snap})
    print(f"wrote {path}")
    print(json.dumps({"submissions": sub, "snapshot": snap}))


if __name__ == "__main__":
    main()
