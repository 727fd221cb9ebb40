"""Active learning for the annotation queue: a reward model says which open prompts it is least sure of.

An admin picks a registered reward model in the admin console (Projects > Active learning) and
presses "Score open prompts". A worker thread, never Gradio's event loop, loads the model
(:meth:`rlhf.scoring.RewardScorer.load`), computes each open prompt's uncertainty over the replies
annotators rank (:func:`rlhf.uncertainty.uncertainties`: BALD over an ensemble's heads, the
entropy of a one-head model) and writes the figures in one transaction
(:func:`annotations.queue.write_uncertainties`). A project whose queue order is
'uncertain first' then serves the prompts the model is least sure of first.

A scoring job is a row of the store's ``jobs`` table (kind ``uncertainty``), as candidate
generation's are: the console polls its progress from the store, one scoring job per project
runs at a time, a failure keeps its reason, and a job that died with its studio is marked
``lost`` when the next studio starts (``annotations.jobs.mark_lost``).

    job_id = start_scoring(store, registry, project_id, "rm-ensemble", admin)   # returns at once
    wait(store, job_id)                                                        # tests and scripts
    score_open_prompts(store, registry, project_id, "rm-ensemble", admin.id)    # the same work, blocking
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable

from annotations.accounts import Annotator
from annotations.jobs import JobRecord, create_exclusive_job, get_job, update_job
from annotations.queue import QueueSettings, open_prompts, queue_settings, write_uncertainties
from annotations.store import Store, StoreError
from rlhf.modelfiles import ModelError
from rlhf.registry import ModelRegistry
from studio.render import progress_bar

KIND = "uncertainty"
CHUNK = 16  # prompts per forward pass group: the progress bar moves and memory stays bounded
REPORT_EVERY = 1.0  # seconds between progress writes to the store (a write is a transaction)


def reward_models(registry: ModelRegistry) -> list[str]:
    """Registered reward models (ensembles included): what the console's dropdown offers."""
    return registry.names("reward-model")


def check_model(registry: ModelRegistry, name: str | None) -> str:
    """``name`` if it is a registered reward model; ModelError saying what to do otherwise."""
    if not name:
        raise ModelError("choose a reward model (train one on a snapshot in the Reward tab, or register a folder)")
    entry = registry.get(name)
    if entry.kind != "reward-model":
        raise ModelError(f"{name} is a {entry.kind} model, not a reward model; choose one from the list")
    return entry.name


def score_open_prompts(
    store: Store,
    registry: ModelRegistry,
    project_id: int,
    model: str,
    by: int,
    progress: Callable[[int, int], None] | None = None,
    device: str | None = None,
) -> int:
    """Score every open prompt of a project with ``model`` and store the figures; returns how many.

    Blocking (a model load and forward passes): call it from a worker thread, as
    :func:`start_scoring` does. ``by`` is the admin on whose behalf the figures are written.
    """
    from rlhf.scoring import RewardScorer
    from rlhf.uncertainty import uncertainties

    model = check_model(registry, model)
    items = open_prompts(store, project_id)
    if not items:
        raise StoreError("this project has no open prompts to score (prompts with their k replies that still need rankings)")
    if progress:
        progress(0, len(items))
    scorer = RewardScorer.load(registry.resolve(model), device=device)
    values: dict[int, float] = {}
    for start in range(0, len(items), CHUNK):
        chunk = items[start : start + CHUNK]
        figures = uncertainties(scorer, [(text, replies) for _, text, replies in chunk])
        values.update(zip([pid for pid, _, _ in chunk], figures, strict=True))
        if progress:
            progress(len(values), len(items))
    return write_uncertainties(store, project_id, values, model=model, by=by)


def start_scoring(store: Store, registry: ModelRegistry, project_id: int, model: str, user: Annotator, device: str | None = None) -> int:
    """Check what can be checked at once, then score in a worker thread; returns the job's id.

    ModelError or StoreError (nothing started) for a model that is not a reward model, a project
    with nothing to score, or a scoring job of this project still running.
    """
    if not user.is_admin:
        raise StoreError("only admins can score a project's prompts")
    model = check_model(registry, model)
    if queue_settings(store, project_id).open == 0:
        raise StoreError("this project has no open prompts to score (prompts with their k replies that still need rankings)")
    job_id = create_exclusive_job(store, KIND, project_id, user.name, {"model": model, "total": 0, "done": 0})
    args = (store, registry, job_id, project_id, model, user.id, device)
    threading.Thread(target=_run, args=args, daemon=True, name=f"uncertainty-{job_id}").start()
    return job_id


def _record(store: Store, job_id: int, **fields) -> None:
    """Write the job's row; a failure to record never stops the job (it is printed)."""
    try:
        update_job(store, job_id, **fields)
    except Exception:  # the store may be closing under a daemon thread
        traceback.print_exc()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, StoreError | ModelError):
        return str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return f"out of memory while scoring ({type(exc).__name__}); use a smaller reward model or score on a machine with more memory"
    return f"{type(exc).__name__}: {exc}"


def _run(store: Store, registry: ModelRegistry, job_id: int, project_id: int, model: str, by: int, device: str | None) -> None:
    detail = {"model": model, "total": 0, "done": 0}
    last = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last
        detail.update(done=done, total=total)
        if done in (0, total) or time.monotonic() - last >= REPORT_EVERY:
            last = time.monotonic()
            _record(store, job_id, state="running", detail=dict(detail))

    try:
        _record(store, job_id, state="running", detail=dict(detail))
        detail["written"] = score_open_prompts(store, registry, project_id, model, by, progress, device)
        _record(store, job_id, state="done", detail=dict(detail), ended=True)
    except BaseException as exc:  # MemoryError included; nothing was written (one transaction at the end)
        traceback.print_exc()
        _record(store, job_id, state="failed", detail=dict(detail), error=_reason(exc), ended=True)
        if not isinstance(exc, Exception):
            raise


def wait(store: Store, job_id: int, timeout: float = 600) -> JobRecord:
    """Block until a scoring job ends (or ``timeout`` passes); its record."""
    deadline = time.monotonic() + timeout
    while True:
        job = get_job(store, job_id)
        if job is None or job.state not in ("queued", "running") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def job_summary(job: JobRecord) -> str:
    """One line about a scoring job, in words (plain text: render it escaped)."""
    model = job.detail.get("model", "")
    done, total = job.detail.get("done", 0), job.detail.get("total", 0)
    if job.state in ("failed", "lost"):
        return f"Scoring job {job.id} ({model}) {job.state}: {job.error}"
    if job.state == "done":
        took = (job.ended - job.started).total_seconds() if job.ended else 0
        return f"Scoring job {job.id} ({model}): {job.detail.get('written', done)} prompts scored in {took:.0f} s"
    return f"Scoring job {job.id} ({model}): {done} of {total} prompts ({job.state})"


def job_html(store: Store, job_id: int | None) -> tuple[str, bool]:
    """(progress bar HTML, still running) for a scoring job; empty for no job."""
    job = get_job(store, int(job_id)) if job_id else None
    if job is None or job.kind != KIND:
        return "", False
    total = job.detail.get("total", 0)
    fraction = 1.0 if job.state == "done" else (job.detail.get("done", 0) / total if total else 0.0)
    return progress_bar(fraction, job_summary(job), failed=job.state in ("failed", "lost")), job.state in ("queued", "running")


def settings_line(settings: QueueSettings) -> str:
    """What the console shows under the controls: the order, and how many prompts are scored, when, by which model."""
    order = f"Queue order: {settings.order}."
    if not settings.scored:
        return f"{order} No prompt scored yet: choose a reward model and press Score open prompts."
    when = settings.last_scored.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if settings.last_scored else "an unknown time"
    line = (
        f"{order} {settings.open_scored} of {settings.open} open prompts scored "
        f"({settings.scored} of {settings.prompts} prompts in all) with {settings.model}, last on {when}."
    )
    if settings.open_scored < settings.open:
        line += " Prompts that were not ready then are served after the scored ones; score again to include them."
    return line
