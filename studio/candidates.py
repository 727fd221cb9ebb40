"""Candidate replies for the annotation queue, generated in the background.

An admin picks a project, one or more models and sampling settings; a job fills every prompt
up to the project's k replies, spreading the missing replies over the models in turn (so
models can be mixed), batched per model through the generation engine. Each reply records its
agent: model name, checkpoint folder and sampling settings (and ``truncated_tokens`` when the
prompt had to lose its start to fit the model's context). The screen polls the job's progress.

Every job is also a row of the store's ``jobs`` table (``annotations.jobs``): its state, detail
(models, sampling, progress) and, when it fails, the reason (a model error, running out of
memory, ...). A studio that starts finds the jobs its predecessor left running and marks them
``lost`` ("the studio stopped while this job ran"), so the admin console shows what happened.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field

from annotations.jobs import create_job, mark_lost, recent_jobs, update_job
from annotations.store import ReplyRecord, Store
from rlhf.generation import SamplingParams
from rlhf.pool import EnginePool
from rlhf.registry import ModelRegistry

KIND = "candidates"


@dataclass
class Job:
    id: int
    project_id: int
    models: list[str]
    sampling: dict
    owner: str = ""
    total: int = 0
    done: int = 0
    empty: int = 0  # replies the model ended at once; left for a later run
    truncated: int = 0  # prompts cut to fit a model's context
    state: str = "queued"  # queued | running | done | failed
    error: str = ""
    started: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def fraction(self) -> float:
        return 1.0 if self.total == 0 else self.done / self.total

    def detail(self) -> dict:
        """What the job's row records besides its state and error."""
        return {
            "models": self.models,
            "sampling": self.sampling,
            "total": self.total,
            "done": self.done,
            "empty": self.empty,
            "truncated_prompts": self.truncated,
        }

    def summary(self) -> str:
        if self.state == "failed":
            return f"Job {self.id} failed: {self.error}"
        head = f"Job {self.id} ({', '.join(self.models)}): {self.done} of {self.total} replies"
        if self.state == "done":
            took = (self.finished or time.time()) - self.started
            extra = f"; {self.empty} came back empty and can be generated again" if self.empty else ""
            if self.truncated:
                extra += f"; {self.truncated} prompt(s) were cut to the model's context"
            return f"{head}, finished in {took:.0f} s{extra}"
        return f"{head} ({self.state})"


def failure_reason(exc: BaseException) -> str:
    """Why a job failed, in words an admin can act on."""
    name = type(exc).__name__
    if isinstance(exc, MemoryError) or name == "OutOfMemoryError" or "out of memory" in str(exc).lower():
        detail = str(exc).strip()
        return (
            "out of memory while generating"
            + (f" ({name}: {detail})" if detail else f" ({name})")
            + "; lower max new tokens, use fewer or smaller models, or shorten the prompts"
        )
    return f"{name}: {exc}"


def plan(needs: list[tuple[int, int, int]], models: list[str]) -> dict[str, list[int]]:
    """Which model writes which missing reply: prompt ids per model.

    ``needs`` holds (prompt id, replies it has, replies missing). Models take turns, starting
    after the replies a prompt already has, so a prompt's k replies come from different models
    whenever there are enough of them.
    """
    work: dict[str, list[int]] = defaultdict(list)
    for prompt_id, have, missing in needs:
        for j in range(missing):
            work[models[(have + j) % len(models)]].append(prompt_id)
    return dict(work)


class CandidateJobs:
    """Background generation jobs of one studio, each recorded in the store's ``jobs`` table."""

    def __init__(self, store: Store, engines: EnginePool, registry: ModelRegistry) -> None:
        self.store = store
        self.engines = engines
        self.registry = registry
        self._jobs: dict[int, Job] = {}
        self._lock = threading.Lock()
        # Jobs a stopped studio left behind say so, instead of "running" for ever.
        self.lost = mark_lost(store)

    def start(
        self, project_id: int, models: list[str], params: SamplingParams, prompt_ids: list[int] | None = None, owner: str = ""
    ) -> Job:
        """Validate and start a job; ValueError with a clear message when it cannot run."""
        if not models:
            raise ValueError("choose at least one model")
        for name in models:
            entry = self.registry.get(name)
            if entry.kind != "causal-lm":
                raise ValueError(f"{name} is not a model that writes replies (it is a {entry.kind} model)")
        project = self.store.project(project_id)
        if len(set(models)) == 1 and params.greedy and project.k > 1:
            raise ValueError("one model with temperature 0 writes the same reply k times; raise the temperature or add models")
        with self._lock:
            busy = [j for j in self._jobs.values() if j.project_id == project_id and j.state in ("queued", "running")]
            if busy:
                raise ValueError(f"job {busy[0].id} is still filling this project; wait for it to finish")
            job = Job(0, project_id, list(models), params.as_dict(), owner=owner)
            job.id = create_job(self.store, KIND, project_id, owner, job.detail())
            self._jobs[job.id] = job
        threading.Thread(target=self._run, args=(job, params, prompt_ids), daemon=True, name=f"candidates-{job.id}").start()
        return job

    def get(self, job_id: int) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def latest(self, project_id: int | None = None) -> Job | None:
        with self._lock:
            jobs = [j for j in self._jobs.values() if project_id is None or j.project_id == project_id]
            return max(jobs, key=lambda j: j.id) if jobs else None

    def records(self, limit: int = 20):
        """The newest job records of the store (this studio's and earlier ones), newest first."""
        return recent_jobs(self.store, limit, kind=KIND)

    def wait(self, job: Job, timeout: float = 600) -> Job:
        """Block until the job ends (for the CLI and tests)."""
        deadline = time.monotonic() + timeout
        while job.state in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.05)
        return job

    def _record(self, job: Job, **fields) -> None:
        """Write the job's row; a failure to record never stops the job (it is printed)."""
        try:
            update_job(self.store, job.id, detail=job.detail(), **fields)
        except Exception:  # the store may be closing under a daemon thread
            traceback.print_exc()

    def _run(self, job: Job, params: SamplingParams, prompt_ids: list[int] | None) -> None:
        try:
            job.state = "running"
            self._record(job, state="running")
            k = self.store.project(job.project_id).k
            needs = [(pid, k - missing, missing) for pid, missing in self.store.prompts_needing_replies(job.project_id)]
            if prompt_ids is not None:
                wanted = set(prompt_ids)
                needs = [n for n in needs if n[0] in wanted]
            work = plan(needs, job.models)
            job.total = sum(len(v) for v in work.values())
            self._record(job)
            for model, prompt_ids_for_model in work.items():
                engine = self.engines.get(model)
                checkpoint = str(self.registry.resolve(model))
                for start in range(0, len(prompt_ids_for_model), engine.batch_size):
                    chunk = prompt_ids_for_model[start : start + engine.batch_size]
                    prompts = [self.store.prompt(pid) for pid in chunk]
                    results = engine.generate([p.conversation for p in prompts], params)
                    by_prompt: dict[int, list[ReplyRecord]] = defaultdict(list)
                    for pid, gen in zip(chunk, results, strict=True):
                        sampling = job.sampling
                        if gen.truncated_tokens:  # the reply answers the prompt's end only: say so
                            sampling = {**job.sampling, "truncated_tokens": gen.truncated_tokens}
                            job.truncated += 1
                        if gen.text.strip():
                            by_prompt[pid].append(ReplyRecord(gen.text, model=model, checkpoint=checkpoint, sampling=sampling))
                        else:
                            job.empty += 1
                    for pid, replies in by_prompt.items():
                        self.store.add_replies(pid, replies)
                    job.done += len(chunk)
                    self._record(job)
            job.finished = time.time()
            self._record(job, state="done", ended=True)  # the row first: whoever waits on the job sees it
            job.state = "done"
        except BaseException as exc:  # MemoryError included; the replies already stored stay
            job.error = failure_reason(exc)
            job.finished = time.time()
            traceback.print_exc()
            self._record(job, state="failed", error=job.error, ended=True)
            job.state = "failed"
            if not isinstance(exc, Exception):
                raise
        finally:
            job.finished = job.finished or time.time()


JOB_COLUMNS = ["job", "state", "project", "by", "models", "replies", "started", "ended", "reason"]


def jobs_frame(jobs: CandidateJobs, limit: int = 20):
    """The newest candidate jobs for the admin console: state and, for failed or lost ones, the reason."""
    import pandas as pd

    names = {p.id: p.name for p in jobs.store.projects()}
    rows = []
    for r in jobs.records(limit):
        progress = f"{r.detail.get('done', 0)} of {r.detail.get('total', 0)}"
        when = [t.strftime("%Y-%m-%d %H:%M:%S") if t else "" for t in (r.started, r.ended)]
        models = ", ".join(r.detail.get("models", []))
        rows.append([r.id, r.state, names.get(r.project_id, ""), r.owner, models, progress, *when, r.error])
    return pd.DataFrame(rows, columns=JOB_COLUMNS)
