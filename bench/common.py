"""Helpers shared by the benchmarks: machine description, medians, writing results."""

from __future__ import annotations

import gzip
import json
import os
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def machine() -> dict:
    """What ran the benchmark: CPU model, cores, memory, accelerator, library versions."""
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gb, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_result(name: str, figures: dict) -> Path:
    """Write bench/results/<name>.json with the date and machine."""
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), **figures}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    return out


def hh_pairs(limit: int | None = None) -> list[dict]:
    """The HH-RLHF harmless-base pairs from ../shared/data (benchmarks only)."""
    path = SHARED_DATA / "hh-rlhf-harmless-dev.jsonl.gz"
    with gzip.open(path, "rt") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return rows[:limit] if limit else rows


def first_human_turn(transcript: str) -> str:
    """The first ``Human:`` turn of an HH-RLHF transcript."""
    body = transcript.split("\n\nHuman: ", 1)[1]
    return body.split("\n\nAssistant:", 1)[0].strip()
