"""How many CPU threads torch uses: chosen from the cores that are actually free, or set.

On a small machine shared with another process, torch's default (one thread per core) makes
every thread wait for the others: one PPO step took 707 s with the default threads on 2 busy
cores and 78 s with one. So each run (config key ``threads``, 0 = automatic) and the studio
(``--threads`` / ``STUDIO_THREADS``) choose:

- a number you set is used as it is;
- automatic: the cores this process may use, minus the load already on them (the 1-minute load
  average, rounded), at least 1. An idle 2-core machine gets 2; one where another job keeps a
  core busy gets 1.

The choice and why are logged: in a run's first event (``threads``, ``cores``, ``load``) and its
log, and in the studio's start-up line.

    info = apply_threads(cfg.threads)     # {"threads": 1, "cores": 2, "load": 1.3, "why": "..."}
"""

from __future__ import annotations

import os


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose_threads(requested: int | None = None, cores: int | None = None, load: float | None = None) -> dict:
    """The thread count and the reason, without changing anything."""
    cores = cores or available_cores()
    if requested:
        return {"threads": int(requested), "cores": cores, "load": None, "why": f"set to {requested}"}
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    free = max(1, min(cores, round(cores - load)))
    return {"threads": free, "cores": cores, "load": round(load, 2), "why": f"{free} of {cores} cores free (load average {load:.1f})"}


def apply_threads(requested: int | None = None) -> dict:
    """Choose (see :func:`choose_threads`) and set torch's intra-op threads; returns the choice."""
    import torch

    info = choose_threads(requested)
    torch.set_num_threads(info["threads"])
    return info
