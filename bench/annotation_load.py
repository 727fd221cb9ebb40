"""Annotation load: 30 simulated annotators through gradio_client against a running studio.

    .venv/bin/python -m bench.annotation_load [--annotators 30] [--rankings 20] [--think 3]
        [--attack-logins 200] [--import-lines 50000] [--no-back-to-back]

A fresh database gets a pairwise project (k = 2) with enough prompts and replies, one account
per annotator and an admin; a real studio (python launch.py) serves it. Each annotator logs in
with its own gradio_client, opens the project, then submits ``--rankings`` verdicts; every call
is one submit-and-load-next round trip, timed at the client. Afterwards the studio stops and the
database is opened: the rankings stored must equal the acknowledged submissions.

Runs (each annotator first makes ``WARM_UP`` untimed submissions):
- back to back: no pause between one annotator's submissions (a stress test);
- paced: on average ``--think`` seconds (uniformly 0.5x to 1.5x) between one annotator's
  submissions, starts staggered (people read before they rank). One studio, the same logged-in
  annotators, four phases with the same random pauses (one seed: the same bursts of clicks):
  quiet phase 1;
  (a) ``--attack-logins`` wrong passwords sent to the real POST /login route, spread over the
      phase, from another process (bench/login_attack.py), for real annotator names, the admin
      and made-up names. Everything comes from 127.0.0.1, so the per-address lockout locks the
      annotators' address too: they (and the admin) logged in before the attack, as people at
      work would have, and their sessions must go on working;
  quiet phase 2: how much two quiet phases differ (the noise of one phase's p95);
  (b) the admin uploads a JSONL of ``--import-lines`` prompts into another project through the
      real ``import_file`` endpoint (gradio_client + handle_file, as the Import tab does), one
      pause into the phase. The import lasts a few seconds of the minute: the calls that overlap
      it are compared with the same seconds of the two quiet phases (the same clicks), and the
      whole phase with the quiet baseline.
  The quiet baseline is both quiet phases' calls together.
Each of back to back and paced is repeated against bench/echo_server.py, a Gradio app whose
endpoint does nothing, under the same load and pauses: on this 2-core machine gradio_client
itself costs about as much CPU as the server, so the echo figures are the floor and the ratio
is what the studio adds. The machine is shared: compare figures of one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from annotations.accounts import add_annotator
from annotations.store import Store
from bench.common import ROOT, write_result

PASSWORD = "load-test-password"
IMPORT_PROJECT = "imports"
# gradio_client's plain requests (login, config) time out after 5 s by default: 30 clients
# logging in at once on 2 shared cores can take longer, which is not what this bench measures.
HTTPX = {"timeout": 300}
LOGINS_AT_ONCE = 6
WARM_UP = 2  # untimed submissions per annotator before the timed ones (first calls are slower)
GOAL_RATIO = 1.2  # studio p95 within 1.2x of the do-nothing endpoint
GOAL_CHANGE = 0.20  # neither the login attack nor the import moves the p95 more than 20%


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
        store.create_project(IMPORT_PROJECT, k=2, min_submitted=1, guidelines="Imported prompts waiting for replies.")
        add_annotator(store, "admin", PASSWORD, role="admin")
        for n in range(annotators):
            add_annotator(store, f"annotator{n:02d}", PASSWORD)


def import_file_lines(path: Path, lines: int) -> Path:
    """A JSONL of ``lines`` distinct prompts, as an admin would upload (about 100 bytes a line)."""
    with path.open("w") as handle:
        for n in range(lines):
            text = f"Imported question {n}: explain, in two or three sentences, why the sky at dusk turns red ({n % 97})."
            handle.write(json.dumps({"prompt": text, "category": "bench"}) + "\n")
    return path


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


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def percentile(values: list[float], q: float) -> float:
    lat = sorted(values)
    return lat[int(q * (len(lat) - 1))] if lat else float("nan")


@dataclass
class Phase:
    """The timed calls of one phase: (start, end) per acknowledged call, on the bench's clock."""

    calls: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    start: float = 0.0
    wall: float = 0.0
    cpu: float = 0.0

    def window(self, since: float, until: float) -> list[float]:
        """Latencies of the calls that overlap [since, until], in seconds from the phase's start."""
        a, b = self.start + since, self.start + until
        return [t1 - t0 for t0, t1 in self.calls if t1 >= a and t0 <= b]

    def figures(self, since: float | None = None, until: float | None = None) -> dict:
        """p50/p95 of the calls (those overlapping [since, until] when given)."""
        picked = [b - a for a, b in self.calls if (since is None or b >= since) and (until is None or a <= until)]
        out = {
            "calls": len(picked),
            "p50_ms": round(1000 * statistics.median(picked), 1) if picked else float("nan"),
            "p95_ms": round(1000 * percentile(picked, 0.95), 1),
        }
        if since is None and until is None:
            out |= {
                "throughput_per_s": round(len(self.calls) / self.wall, 1) if self.wall else 0.0,
                "acknowledged": len(self.calls),
                "errors": len(self.errors),
                "client_cpu_share": round(self.cpu / self.wall / (os.cpu_count() or 1), 2) if self.wall else 0.0,
            }
        return out


class Team:
    """``n`` annotators, each with a logged-in gradio_client, driven through phase after phase."""

    def __init__(self, url: str, n: int, open_project: bool) -> None:
        from gradio_client import Client

        def login(i: int):
            client = Client(url, auth=(f"annotator{i:02d}", PASSWORD), verbose=False, httpx_kwargs=HTTPX)
            if open_project:
                client.predict("load", api_name="/open_project")
            return client

        # A few at a time: logging in is not what is measured, and each one fetches the whole config.
        with ThreadPoolExecutor(LOGINS_AT_ONCE) as pool:
            self.clients = list(pool.map(login, range(n)))

    def run(self, rankings: int, think: float, api: str, seed: int = 0) -> Phase:
        """Each annotator makes ``rankings`` timed calls. The same ``seed`` gives the same pauses and
        starts: phases compared with each other use one seed, so they see the same bursts of clicks."""
        phase = Phase()
        lock = threading.Lock()
        barrier = threading.Barrier(len(self.clients))

        def annotator(n: int) -> None:
            client = self.clients[n]
            try:
                barrier.wait(timeout=300)  # everyone starts together
                rng = random.Random(seed * 1000 + n)
                if think:
                    time.sleep(rng.uniform(0, think))  # people do not all click at the same instant
                for _ in range(rankings):
                    t0 = time.perf_counter()
                    client.predict("", api_name=api)
                    t1 = time.perf_counter()
                    with lock:
                        phase.calls.append((t0, t1))
                    if think:
                        time.sleep(think * rng.uniform(0.5, 1.5))
            except Exception as exc:  # counted and printed: a lost submission is a finding
                with lock:
                    phase.errors.append(f"annotator{n:02d}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=annotator, args=(n,)) for n in range(len(self.clients))]
        cpu0 = time.process_time()
        phase.start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        phase.wall = time.perf_counter() - phase.start
        phase.cpu = time.process_time() - cpu0
        return phase

    def close(self) -> None:
        for client in self.clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - the server may be gone already
                pass


def run_load(url: str, annotators: int, rankings: int, think: float, api: str, open_project: bool) -> dict:
    """Log ``annotators`` clients in, then time ``rankings`` calls of ``api`` each."""
    team = Team(url, annotators, open_project)
    try:
        team.run(WARM_UP, think, api, seed=99)
        phase = team.run(rankings, think, api)
    finally:
        team.close()
    return phase.figures() | {"error_messages": phase.errors}


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
        stop(proc)


def stored_rankings(db: Path) -> int:
    with Store(db) as store:
        return store.query(
            "SELECT count(*) FROM rankings r JOIN annotators a ON a.id = r.annotator_id "
            "WHERE r.status = 'submitted' AND a.name LIKE 'annotator%'"
        )[0][0]


def back_to_back(tmp: Path, annotators: int, rankings: int) -> dict:
    db = tmp / "load-back_to_back.duckdb"
    prepare(db, annotators, annotators * (WARM_UP + rankings) + 50)
    proc, url = start(db, tmp / "home", tmp / "studio-back_to_back.log")
    try:
        result = run_load(url, annotators, rankings, 0.0, "/pairwise_a", open_project=True)
    finally:
        stop(proc)
    result["stored"] = stored_rankings(db) - annotators * WARM_UP  # the warm-up's rankings are stored too
    return result


class Importer(threading.Thread):
    """The admin's upload through the Import tab's endpoint, started ``delay`` seconds into a phase."""

    def __init__(self, admin, path: Path, delay: float) -> None:
        super().__init__(daemon=True)
        self.admin, self.path, self.delay = admin, path, delay
        self.started = self.ended = float("nan")
        self.message = ""

    def run(self) -> None:
        from gradio_client import handle_file

        time.sleep(self.delay)
        self.started = time.perf_counter()
        try:
            self.message = str(self.admin.predict(IMPORT_PROJECT, handle_file(str(self.path)), "auto", False, api_name="/import_file"))
        except Exception as exc:  # noqa: BLE001 - reported with the figures
            self.message = f"{type(exc).__name__}: {exc}"
        self.ended = time.perf_counter()


def importer_state() -> str:
    """Which importer the studio ran: its last commit, and whether the working tree changes it."""
    try:
        last = subprocess.run(
            ["git", "log", "-1", "--format=%h %s", "--", "annotations/importers.py"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "annotations/importers.py"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{last[:90]}" + (" + uncommitted changes in the working tree" if dirty else "")


def summary(latencies: list[float]) -> dict:
    return {
        "calls": len(latencies),
        "p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else float("nan"),
        "p95_ms": round(1000 * percentile(latencies, 0.95), 1),
    }


def paced_phases(tmp: Path, annotators: int, rankings: int, phase_rankings: int, think: float, attack: int, lines: int) -> dict:
    """Baseline, (a) login attack, baseline again, (b) import: one studio, the same logged-in annotators.

    Every phase uses the same random pauses (one seed), so the phases differ only in what runs beside
    them; the second baseline shows how much two quiet phases differ all the same.
    """
    from gradio_client import Client

    db = tmp / "load-paced.duckdb"
    prepare(db, annotators, annotators * (WARM_UP + 2 * rankings + 2 * phase_rankings) + 50)
    jsonl = import_file_lines(tmp / "prompts-import.jsonl", lines)
    proc, url = start(db, tmp / "home", tmp / "studio-paced.log")
    phases: dict[str, dict] = {}
    runs: dict[str, Phase] = {}
    try:
        # Everyone logs in before the attack, the admin too: after it, the address is locked out.
        admin = Client(url, auth=("admin", PASSWORD), verbose=False, httpx_kwargs=HTTPX)
        team = Team(url, annotators, open_project=True)
        try:
            runs["warm_up"] = team.run(WARM_UP, think, "/pairwise_a", seed=99)
            runs["baseline"] = team.run(rankings, think, "/pairwise_a")

            out = tmp / "attack.json"
            names = [f"annotator{n:02d}" for n in range(annotators)] + ["admin", "root", "test", "guest", "annotator", "Admin"]
            attacker = subprocess.Popen(
                [sys.executable, "-m", "bench.login_attack", url, str(attack), str(phase_rankings * think), str(out), *names], cwd=ROOT
            )
            runs["login_attack"] = team.run(phase_rankings, think, "/pairwise_a")
            if attacker.wait(timeout=600) != 0:
                raise RuntimeError(f"bench.login_attack exited with {attacker.returncode}")

            runs["baseline_again"] = team.run(rankings, think, "/pairwise_a")

            importer = Importer(admin, jsonl, delay=think)
            importer.start()
            runs["import"] = team.run(phase_rankings, think, "/pairwise_a")
            importer.join(timeout=600)
        finally:
            team.close()
            admin.close()
    finally:
        stop(proc)
    for name, run in runs.items():
        phases[name] = run.figures() | {"error_messages": run.errors}
    # The baseline: both quiet phases' calls together (the same clicks twice; each one is shown too).
    phases["quiet"] = summary([b - a for run in (runs["baseline"], runs["baseline_again"]) for a, b in run.calls])
    phases["login_attack"]["attack"] = json.loads(out.read_text())
    # The calls that overlapped the import, against the same seconds of the two quiet phases
    # (the same pauses, so the same clicks): the import is a few seconds of a minute-long phase.
    since, until = importer.started - runs["import"].start, importer.ended - runs["import"].start
    same_window = runs["baseline"].window(since, until) + runs["baseline_again"].window(since, until)
    with Store(db) as store:
        imported = store.query("SELECT count(*) FROM prompts p JOIN projects j ON j.id = p.project_id WHERE j.name = ?", [IMPORT_PROJECT])
    phases["import"] |= {
        "during_import": summary(runs["import"].window(since, until)),
        "same_window_quiet": summary(same_window),
        "import_seconds": round(importer.ended - importer.started, 1),
        "import_started_s": round(since, 1),
        "import_message": importer.message[:300],
        "import_lines": lines,
        "imported_prompts": imported[0][0],
        "importer": importer_state(),
    }
    acknowledged = sum(p.get("acknowledged", 0) for p in phases.values())
    return {"phases": phases, "acknowledged": acknowledged, "stored": stored_rankings(db)}


def change(value: float, base: float) -> float:
    return round(100 * (value / base - 1), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=30)
    parser.add_argument("--rankings", type=int, default=20, help="submissions per annotator in each run and baseline phase")
    parser.add_argument(
        "--phase-rankings", type=int, default=None, help="submissions per annotator in phases (a) and (b) (default: --rankings)"
    )
    parser.add_argument("--think", type=float, default=3.0, help="seconds between one annotator's submissions in the paced run")
    parser.add_argument("--attack-logins", type=int, default=200, help="wrong logins during phase (a)")
    parser.add_argument("--import-lines", type=int, default=50_000, help="prompts in the file imported during phase (b)")
    parser.add_argument("--no-back-to-back", action="store_true", help="only the paced runs (quicker)")
    args = parser.parse_args()
    phase_rankings = args.phase_rankings or args.rankings
    began = time.perf_counter()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.no_back_to_back:
            results["back_to_back"] = {
                "think_seconds": 0.0,
                "studio": back_to_back(tmp, args.annotators, args.rankings),
                "gradio_echo": echo_floor(tmp, args.annotators, args.rankings, 0.0),
            }
        paced = paced_phases(tmp, args.annotators, args.rankings, phase_rankings, args.think, args.attack_logins, args.import_lines)
        echo = echo_floor(tmp, args.annotators, args.rankings, args.think)
    phases = paced["phases"]
    quiet, attack_run, imp = phases["quiet"], phases["login_attack"], phases["import"]
    ratio = quiet["p95_ms"] / echo["p95_ms"]
    a_change = change(attack_run["p95_ms"], quiet["p95_ms"])
    b_change = change(imp["p95_ms"], quiet["p95_ms"])
    b_during = change(imp["during_import"]["p95_ms"], imp["same_window_quiet"]["p95_ms"])
    noise = change(phases["baseline_again"]["p95_ms"], phases["baseline"]["p95_ms"])
    results["paced"] = {"think_seconds": args.think, "studio": quiet, "gradio_echo": echo, "p95_ratio_vs_echo": round(ratio, 2)}

    print(f"{args.annotators} annotators, submit-and-load-next through gradio_client, {os.cpu_count()}-core CPU")
    print(f"{'run':<40}{'calls':>6}{'p50 ms':>9}{'p95 ms':>9}{'p95 change':>12}{'per s':>7}{'errors':>8}{'client CPU':>12}")

    def row(label: str, m: dict, delta: float | None = None) -> None:
        calls = m.get("calls", m.get("acknowledged"))
        rate = m.get("throughput_per_s", "")
        cpu = f"{m['client_cpu_share']:.0%}" if "client_cpu_share" in m else ""
        change_text = f"{delta:+.1f}%" if delta is not None else ""
        print(f"{label:<40}{calls:>6}{m['p50_ms']:>9}{m['p95_ms']:>9}{change_text:>12}{rate!s:>7}{m.get('errors', '')!s:>8}{cpu:>12}")

    if "back_to_back" in results:
        b = results["back_to_back"]
        b["p95_ratio_vs_echo"] = round(b["studio"]["p95_ms"] / b["gradio_echo"]["p95_ms"], 2)
        row("back to back, studio", b["studio"])
        row("back to back, gradio echo (floor)", b["gradio_echo"])
    row("paced, gradio echo (floor)", echo)
    row("paced, studio, quiet (both phases)", quiet)
    row("  quiet phase 1", phases["baseline"])
    row("  quiet phase 2", phases["baseline_again"], noise)
    row(f"  (a) + {args.attack_logins} wrong logins", attack_run, a_change)
    row(f"  (b) + {args.import_lines:,}-line import, phase", imp, b_change)
    row("      calls during the import", imp["during_import"], b_during)
    row("      same seconds, quiet phases", imp["same_window_quiet"])

    attack = attack_run["attack"]
    verdict = {True: "met", False: "missed"}
    goals = {
        "p95_ratio_vs_echo_max": GOAL_RATIO,
        "p95_change_max_pct": 100 * GOAL_CHANGE,
        "ratio_met": ratio <= GOAL_RATIO,
        "login_attack_met": a_change <= 100 * GOAL_CHANGE,
        "import_met": b_during <= 100 * GOAL_CHANGE and b_change <= 100 * GOAL_CHANGE,
    }
    if "back_to_back" in results:
        b = results["back_to_back"]
        stored, acked = b["studio"]["stored"], b["studio"]["acknowledged"]
        print(f"back to back: p95 studio / echo {b['p95_ratio_vs_echo']:.2f}x; {stored} stored of {acked} acknowledged")
    print(f"paced: p95 studio / echo {ratio:.2f}x (goal <= {GOAL_RATIO}x: {verdict[goals['ratio_met']]})")
    print(f"quiet phase 2 vs quiet phase 1: p95 {noise:+.1f}% (the same clicks twice: the noise of one phase's p95)")
    print(
        f"(a) {attack['attempts']} wrong logins in {attack['seconds']} s, HTTP {attack['statuses']}, login p50 {attack['p50_ms']} ms: "
        f"p95 {a_change:+.1f}% vs quiet (goal <= +{GOAL_CHANGE:.0%}: {verdict[goals['login_attack_met']]})"
    )
    print(
        f"(b) import of {args.import_lines:,} lines took {imp['import_seconds']} s from {imp['import_started_s']} s into the phase "
        f"({imp['imported_prompts']:,} prompts stored); p95 {b_during:+.1f}% during it vs the same seconds of the quiet phases, "
        f"{b_change:+.1f}% over the phase (goal <= +{GOAL_CHANGE:.0%}: {verdict[goals['import_met']]})"
    )
    print(f"    importer: {imp['importer']}; said: {imp['import_message'][:160]!r}")
    print(f"paced studio: {paced['stored']} stored of {paced['acknowledged']} acknowledged: {paced['stored'] == paced['acknowledged']}")
    runs = [*phases.items(), ("echo", echo)] + ([("back_to_back", results["back_to_back"]["studio"])] if "back_to_back" in results else [])
    for label, m in runs:
        for e in m.get("error_messages", [])[:3]:
            print(f"  error ({label}):", e)
    for m in [*phases.values(), echo, *(results.get("back_to_back", {}).get(a, {}) for a in ("studio", "gradio_echo"))]:
        m.pop("error_messages", None)
    minutes = (time.perf_counter() - began) / 60
    print(f"whole bench: {minutes:.1f} min")
    command = f"python -m bench.annotation_load --think {args.think}"
    if phase_rankings != args.rankings:
        command += f" --phase-rankings {phase_rankings}"
    path = write_result(
        "annotation_load",
        {
            "command": command,
            "annotators": args.annotators,
            "rankings_each": args.rankings,
            "phase_rankings_each": phase_rankings,
            "warm_up_each": WARM_UP,
            **results,
            "paced_phases": phases,
            "paced_acknowledged": paced["acknowledged"],
            "paced_stored": paced["stored"],
            "p95_change_pct": {"login_attack": a_change, "import_phase": b_change, "during_import": b_during, "quiet_2_vs_1": noise},
            "goals": goals,
            "minutes": round(minutes, 1),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
