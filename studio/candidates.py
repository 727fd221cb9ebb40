"""Candidate replies for the annotation queue, generated in the background.

An admin picks a project, one or more models and sampling settings; a job fills every prompt
up to the project's k replies, spreading the missing replies over the models in turn (so
models can be mixed), batched per model through the generation engine. Each reply records its
agent: model name, checkpoint folder and sampling settings. The screen polls the job's
progress; jobs live in the running studio (one ``CandidateJobs`` per studio).
"""

from __future__ import annotations

import itertools
import threading
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field

from annotations.store import ReplyRecord, Store
from rlhf.generation import SamplingParams
from rlhf.pool import EnginePool
from rlhf.registry import ModelRegistry


@dataclass
class Job:
    id: int
    project_id: int
    models: list[str]
    sampling: dict
    total: int = 0
    done: int = 0
    empty: int = 0  # replies the model ended at once; left for a later run
    state: str = "queued"  # queued | running | done | failed
    error: str = ""
    started: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def fraction(self) -> float:
        return 1.0 if self.total == 0 else self.done / self.total

    def summary(self) -> str:
        if self.state == "failed":
            return f"Job {self.id} failed: {self.error}"
        head = f"Job {self.id} ({', '.join(self.models)}): {self.done} of {self.total} replies"
        if self.state == "done":
            took = (self.finished or time.time()) - self.started
            extra = f"; {self.empty} came back empty and can be generated again" if self.empty else ""
            return f"{head}, finished in {took:.0f} s{extra}"
        return f"{head} ({self.state})"


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
    """Background generation jobs of one studio."""

    def __init__(self, store: Store, engines: EnginePool, registry: ModelRegistry) -> None:
        self.store = store
        self.engines = engines
        self.registry = registry
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, project_id: int, models: list[str], params: SamplingParams, prompt_ids: list[int] | None = None) -> Job:
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
            job = Job(next(self._ids), project_id, list(models), params.as_dict())
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

    def wait(self, job: Job, timeout: float = 600) -> Job:
        """Block until the job ends (for the CLI and tests)."""
        deadline = time.monotonic() + timeout
        while job.state in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.05)
        return job

    def _run(self, job: Job, params: SamplingParams, prompt_ids: list[int] | None) -> None:
        try:
            job.state = "running"
            k = self.store.project(job.project_id).k
            needs = [(pid, k - missing, missing) for pid, missing in self.store.prompts_needing_replies(job.project_id)]
            if prompt_ids is not None:
                wanted = set(prompt_ids)
                needs = [n for n in needs if n[0] in wanted]
            work = plan(needs, job.models)
            job.total = sum(len(v) for v in work.values())
            for model, prompt_ids_for_model in work.items():
                engine = self.engines.get(model)
                checkpoint = str(self.registry.resolve(model))
                for start in range(0, len(prompt_ids_for_model), engine.batch_size):
                    chunk = prompt_ids_for_model[start : start + engine.batch_size]
                    prompts = [self.store.prompt(pid) for pid in chunk]
                    results = engine.generate([p.conversation for p in prompts], params)
                    by_prompt: dict[int, list[ReplyRecord]] = defaultdict(list)
                    for pid, gen in zip(chunk, results, strict=True):
                        if gen.text.strip():
                            by_prompt[pid].append(ReplyRecord(gen.text, model=model, checkpoint=checkpoint, sampling=job.sampling))
                        else:
                            job.empty += 1
                    for pid, replies in by_prompt.items():
                        self.store.add_replies(pid, replies)
                    job.done += len(chunk)
            job.state = "done"
        except Exception as exc:  # shown on the screen; the replies already stored stay
            job.error = f"{type(exc).__name__}: {exc}"
            job.state = "failed"
            traceback.print_exc()
        finally:
            job.finished = time.time()
