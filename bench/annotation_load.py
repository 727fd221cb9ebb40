"""Annotation load: 30 simulated annotators through gradio_client against a running studio.

    .venv/bin/python -m bench.annotation_load [--annotators 30] [--rankings 20] [--think 3]

A fresh database gets a pairwise project (k = 2) with enough prompts and replies, and one
account per annotator; a real studio (python launch.py) serves it. Each annotator logs in
with its own gradio_client, opens the project, then submits ``--rankings`` verdicts; every
call is one submit-and-load-next round trip, timed at the client. ``--think`` adds a pause
(seconds) between an annotator's submissions, as a person reading would. Afterwards the studio
stops and the database is opened: the rankings stored must equal the acknowledged submissions.

Two runs: back to back (no pause: a stress test) and paced (on average ``--think`` seconds, uniformly 0.5x to
1.5x, between one annotator's submissions, starts staggered; people read before they rank). Each is repeated against
bench/echo_server.py, a Gradio app whose endpoint does nothing, under the same load: on this
2-core machine gradio_client itself costs about as much CPU as the server, so the echo figures
are the floor and the ratio is what the studio adds.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from annotations.accounts import add_annotator
from annotations.store import Store
from bench.common import ROOT, write_result

PASSWORD = "load-test-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(db: Path, annotators: int, prompts: int) -> None:
    with Store(db) as store:
        pid = store.create_project("load", k=2, min_submitted=1, guidelines="Pick the better reply.")
        with store.transaction() as cur:
            cur.execute("INSERT INTO prompts (project_id, text) SELECT ?, 'Question number ' || i FROM range(?) t(i)", [pid, prompts])
            cur.execute(
                "INSERT INTO replies (prompt_id, text, model) "
                "SELECT p.id, 'Reply ' || j || ' to question ' || p.id, 'bench' FROM prompts p, range(2) t(j) WHERE p.project_id = ?",
                [pid],
            )
        add_annotator(store, "admin", PASSWORD, role="admin")
        for n in range(annotators):
            add_annotator(store, f"annotator{n:02d}", PASSWORD)


def start(db: Path, home: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "STUDIO_HOME": str(home), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "--port", str(port), "--db", str(db)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(log.read_text()) from None
            time.sleep(0.5)
    raise RuntimeError("studio did not start")


def run_load(url: str, annotators: int, rankings: int, think: float, api: str, open_project: bool) -> dict:
    """Drive ``annotators`` clients, each making ``rankings`` timed calls to ``api``."""
    from gradio_client import Client

    latencies: list[float] = []
    acknowledged = [0] * annotators
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(annotators)

    def annotator(n: int) -> None:
        try:
            user = f"annotator{n:02d}"
            client = Client(url, auth=(user, PASSWORD), verbose=False)
            if open_project:
                client.predict("load", api_name="/open_project")
            barrier.wait(timeout=300)  # everyone starts together
            rng = random.Random(n)
            if think:
                time.sleep(rng.uniform(0, think))  # people do not all click at the same instant
            for _ in range(rankings):
                t0 = time.perf_counter()
                client.predict("", api_name=api)
                took = time.perf_counter() - t0
                with lock:
                    latencies.append(took)
                acknowledged[n] += 1
                if think:
                    time.sleep(think * rng.uniform(0.5, 1.5))
        except Exception as exc:  # counted and printed: a lost submission is a finding
            with lock:
                errors.append(f"annotator{n:02d}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=annotator, args=(n,)) for n in range(annotators)]
    cpu0, start_time = time.process_time(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start_time
    lat = sorted(latencies) or [float("nan")]
    return {
        "p50_ms": round(1000 * statistics.median(lat), 1),
        "p95_ms": round(1000 * lat[int(0.95 * (len(lat) - 1))], 1),
        "throughput_per_s": round(sum(acknowledged) / wall, 1),
        "acknowledged": sum(acknowledged),
        "errors": errors,
        "client_cpu_share": round((time.process_time() - cpu0) / wall / (os.cpu_count() or 1), 2),
    }


def echo_floor(tmp: Path, annotators: int, rankings: int, think: float) -> dict:
    port = free_port()
    log = tmp / "echo.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.echo_server", str(port)], cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        return run_load(url, annotators, rankings, think, "/echo", open_project=False)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def studio_run(tmp: Path, annotators: int, rankings: int, think: float, tag: str) -> dict:
    db = tmp / f"load-{tag}.duckdb"
    prepare(db, annotators, annotators * rankings + 50)
    proc, url = start(db, tmp / "home", tmp / f"studio-{tag}.log")
    try:
        result = run_load(url, annotators, rankings, think, "/pairwise_a", open_project=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    with Store(db) as store:
        result["stored"] = store.query(
            "SELECT count(*) FROM rankings r JOIN annotators a ON a.id = r.annotator_id "
            "WHERE r.status = 'submitted' AND a.name LIKE 'annotator%'"
        )[0][0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=30)
    parser.add_argument("--rankings", type=int, default=20)
    parser.add_argument("--think", type=float, default=3.0, help="seconds between one annotator's submissions in the paced run")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for tag, think in (("back_to_back", 0.0), ("paced", args.think)):
            studio = studio_run(tmp, args.annotators, args.rankings, think, tag)
            floor = echo_floor(tmp, args.annotators, args.rankings, think)
            results[tag] = {"think_seconds": think, "studio": studio, "gradio_echo": floor}

    print(f"{args.annotators} annotators x {args.rankings} submissions, through gradio_client, 2-core CPU")
    print(f"{'run':<14}{'app':<13}{'p50 ms':>9}{'p95 ms':>9}{'per s':>8}{'acked':>7}{'stored':>8}{'errors':>8}{'client CPU':>12}")
    for tag, r in results.items():
        for app in ("studio", "gradio_echo"):
            m = r[app]
            print(
                f"{tag:<14}{app:<13}{m['p50_ms']:>9}{m['p95_ms']:>9}{m['throughput_per_s']:>8}{m['acknowledged']:>7}"
                f"{m.get('stored', '-')!s:>8}{len(m['errors']):>8}{m['client_cpu_share']:>12.0%}"
            )
        ratio = r["studio"]["p95_ms"] / r["gradio_echo"]["p95_ms"]
        print(f"{'':<14}p95 studio / gradio echo: {ratio:.2f}x")
        r["p95_ratio_vs_echo"] = round(ratio, 2)
    for tag, r in results.items():
        s = r["studio"]
        goal = "met" if s["p95_ms"] < 150 else "missed"
        print(f"{tag}: goal p95 < 150 ms {goal}; stored == acknowledged: {s['stored'] == s['acknowledged']}")
        for e in s["errors"][:3]:
            print("  error:", e)
        for app in ("studio", "gradio_echo"):
            r[app]["errors"] = len(r[app]["errors"])
    path = write_result(
        "annotation_load",
        {
            "command": f"python -m bench.annotation_load --think {args.think}",
            "annotators": args.annotators,
            "rankings_each": args.rankings,
            **results,
            "goal_p95_ms": 150,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
