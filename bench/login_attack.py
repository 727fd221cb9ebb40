"""Wrong logins against a running studio's real /login route (for bench.annotation_load).

    python -m bench.login_attack URL ATTEMPTS SECONDS OUT.json [NAME ...]

Sends ``ATTEMPTS`` POST /login requests with wrong passwords, spread evenly over ``SECONDS``
(four connections at most in flight), cycling through the given account names (real ones
and made-up ones). Runs in its own process so that its CPU and GIL do not slow the
annotators' clients in the bench process: what it measures is the server's share.
Writes the HTTP statuses and latencies to OUT.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time

import httpx

IN_FLIGHT = 4


def attack(url: str, attempts: int, seconds: float, names: list[str]) -> dict:
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    start = time.perf_counter()
    gap = seconds / max(1, attempts)
    slots = threading.Semaphore(IN_FLIGHT)

    def one(client: httpx.Client, n: int) -> None:
        try:
            t0 = time.perf_counter()
            try:
                r = client.post(f"{url}/login", data={"username": names[n % len(names)], "password": f"wrong-guess-{n}"})
                code = str(r.status_code)
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            took = time.perf_counter() - t0
            with lock:
                statuses[code] = statuses.get(code, 0) + 1
                latencies.append(took)
        finally:
            slots.release()

    threads = []
    with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=IN_FLIGHT)) as client:
        for n in range(attempts):
            delay = start + n * gap - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            slots.acquire()
            t = threading.Thread(target=one, args=(client, n))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
    lat = sorted(latencies) or [float("nan")]
    return {
        "attempts": attempts,
        "seconds": round(time.perf_counter() - start, 1),
        "statuses": statuses,
        "succeeded": statuses.get("200", 0),
        "p50_ms": round(1000 * statistics.median(lat), 1),
        "p95_ms": round(1000 * lat[int(0.95 * (len(lat) - 1))], 1),
        "names": len(set(names)),
    }


if __name__ == "__main__":
    url, attempts, seconds, out, *names = sys.argv[1:]
    result = attack(url, int(attempts), float(seconds), names or ["admin"])
    with open(out, "w") as handle:
        json.dump(result, handle)
