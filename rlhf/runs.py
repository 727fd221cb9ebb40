"""Run folders: what every training job writes, so the studio can watch, cancel and resume it.

A run folder holds:

    config.yaml     the typed config the job was started with
    events.jsonl    one JSON object per logged step (written by RunCallback)
    run.log         the job's stdout and stderr (written by whoever starts it)
    status.json     state, pid, start / end, error and traceback
    metrics.json    final metrics
    trainer/        the trainer's intermediate checkpoints (checkpoint-N), for --resume
    checkpoint/     the finished model

The folder is owner-only (0700) and the files this module writes are 0600; the ``train``
command sets a 0077 umask, so what the trainers save there is owner-only as well.

States: created -> running -> finished | failed | cancelled, and ``lost`` for a run whose process
is gone without saying how it ended (killed with SIGKILL, out of memory, the machine rebooted):
any reader sees it (:meth:`RunDir.effective_state`), the studio and ``rlhf-studio runs list``
alike; the process is recognised by its pid and start time, so a reused pid is not mistaken
for the run. SIGTERM asks the trainer to stop
at the next step boundary and save what it has (state ``cancelled``); a crash records the
error and traceback (state ``failed``). Readers (the studio, polling) tolerate a half-written
last event line; status and metrics are replaced atomically. On ``--resume`` the events after
the checkpoint are trimmed (:meth:`RunDir.trim_events`), so no step appears twice in the plots.

Under ``accelerate launch`` with several processes only the main one (rank 0) writes: the
methods that write status, events and metrics do nothing in the others, so a trainer that
forgets to ask cannot write the folder twice. A SIGTERM reaches every process; each sets its
own stop request (:func:`stop_on_sigterm`) and :func:`run_callback` makes them agree at each
step (:func:`rlhf.launch.any_process`), so all stop after the same step and none waits forever.

    run = RunDir.create(Path("runs"), "reward", config_dict)
    with run_guard(run) as stop:
        trainer.add_callback(RunCallback(run, stop))
        trainer.train()
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import yaml

from rlhf.launch import any_process, is_main_process
from rlhf.paths import FOLDER_MODE, open_private, private_dir, write_private

STATES = ("created", "running", "finished", "failed", "cancelled")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict) -> None:
    write_private(path, json.dumps(data, indent=2, default=str))


def checkpoint_step(folder: Path) -> int | None:
    """N of a ``checkpoint-N`` folder (the trainer's global step when it was saved)."""
    head, _, tail = Path(folder).name.partition("-")
    return int(tail) if head == "checkpoint" and tail.isdigit() else None


class RunDir:
    """One run's folder and the files in it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # -- layout --------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.path.name

    config_path = property(lambda self: self.path / "config.yaml")
    events_path = property(lambda self: self.path / "events.jsonl")
    log_path = property(lambda self: self.path / "run.log")
    status_path = property(lambda self: self.path / "status.json")
    metrics_path = property(lambda self: self.path / "metrics.json")
    trainer_dir = property(lambda self: self.path / "trainer")
    checkpoint_dir = property(lambda self: self.path / "checkpoint")

    @classmethod
    def create(cls, root: Path, kind: str, config: dict, run_id: str | None = None) -> RunDir:
        """A new run folder with its config and status ``created``."""
        if not re.match(r"^[a-z][a-z0-9_-]*$", kind):
            raise ValueError(f"run kind {kind!r} must be lowercase letters, digits, '-' or '_'")
        run_id = run_id or f"{kind}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
        path = private_dir(Path(root)) / run_id
        path.mkdir(mode=FOLDER_MODE)  # owner-only: configs, logs and checkpoints are nobody else's
        os.chmod(path, FOLDER_MODE)
        run = cls(path)
        write_private(run.config_path, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        _write_json(run.status_path, {"id": run_id, "kind": kind, "state": "created", "created": _now()})
        return run

    # -- status, events, metrics ---------------------------------------------------------------
    def status(self) -> dict:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {"id": self.id, "state": "unknown"}

    def set_status(self, **fields) -> dict:
        status = {**self.status(), **fields}
        if is_main_process():  # the other processes of a launch never write the folder
            _write_json(self.status_path, status)
        return status

    def append_event(self, event: dict) -> None:
        if not is_main_process():
            return
        line = json.dumps({"time": time.time(), **event}, default=float)
        with open_private(self.events_path, "a") as handle:
            handle.write(line + "\n")
            handle.flush()

    def events(self) -> list[dict]:
        """Every complete event line (a line still being written is skipped)."""
        if not self.events_path.is_file():
            return []
        out = []
        for line in self.events_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def trim_events(self, step: int) -> int:
        """Keep the events up to and including ``step`` (a resumed run logs the later ones again).

        The final event of an earlier stop goes too: the resumed run writes its own. The file is
        replaced atomically, so a studio polling it never sees it half-trimmed. Returns how many
        events were dropped.
        """
        if not self.events_path.is_file() or not is_main_process():
            return 0
        kept, dropped = [], 0
        for line in self.events_path.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                dropped += bool(line.strip())  # a line cut off when the process was killed
                continue
            late = isinstance(event.get("step"), int | float) and event["step"] > step
            if late or event.get("final"):
                dropped += 1
                continue
            kept.append(line + "\n")
        write_private(self.events_path, "".join(kept))
        return dropped

    def last_event(self) -> dict | None:
        """The newest complete event, read from the end of the file (cheap for long runs)."""
        if not self.events_path.is_file():
            return None
        with self.events_path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 16384))
            lines = handle.read().decode(errors="replace").splitlines()
        for line in reversed(lines):
            try:
                return json.loads(line)
            except ValueError:
                continue
        return None

    def write_metrics(self, metrics: dict) -> None:
        if is_main_process():
            _write_json(self.metrics_path, metrics)

    def metrics(self) -> dict:
        try:
            return json.loads(self.metrics_path.read_text())
        except (OSError, ValueError):
            return {}

    def tail_log(self, lines: int = 40) -> str:
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def config(self) -> dict:
        return yaml.safe_load(self.config_path.read_text()) or {}

    def last_checkpoint(self) -> Path | None:
        """The newest intermediate trainer checkpoint (trainer/checkpoint-N), for --resume."""
        found = [(checkpoint_step(p), p) for p in self.trainer_dir.glob("checkpoint-*") if checkpoint_step(p) is not None]
        return max(found)[1] if found else None

    def is_alive(self) -> bool:
        """True while the process recorded in status.json still runs."""
        status = self.status()
        return status.get("state") == "running" and process_alive(status.get("pid"), status.get("pid_started"))

    def effective_state(self) -> str:
        """The state as any reader should show it: ``lost`` when the recorded process is gone unseen."""
        status = self.status()
        state = status.get("state", "unknown")
        if state == "running" and not self.is_alive():
            return "lost"
        return state


def process_alive(pid, started: float | None = None) -> bool:
    """Is process ``pid`` running, and (when ``started`` is known) the same process that started then?"""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        import psutil

        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        # A pid the system gave to a newer process after ours died is not our run.
        return started is None or abs(proc.create_time() - float(started)) < 2.0
    except ImportError:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    except Exception:  # psutil.NoSuchProcess, AccessDenied
        return False


def _process_started(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def list_runs(root: Path, kind: str | None = None) -> list[RunDir]:
    """Runs under ``root``, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir() if (p / "status.json").is_file()]
    runs = [r for r in runs if kind is None or r.status().get("kind") == kind]
    return sorted(runs, key=lambda r: r.status().get("created", ""), reverse=True)


class StopRequest:
    """Set by SIGTERM (or by hand); trainers check it at every step boundary."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()


def stop_on_sigterm(stop: StopRequest) -> None:
    """In a process of a launch other than the main one: SIGTERM sets ``stop`` instead of killing it.

    The main process gets this from :func:`run_guard`; the others train with a bare StopRequest,
    and without a handler would die mid-step while the main one waits for them. Only from the
    main thread (Python's rule for signal handlers); a no-op in the main process.
    """
    if not is_main_process() and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())


@contextmanager
def run_guard(run: RunDir, handle_sigterm: bool = True) -> Iterator[StopRequest]:
    """Mark the run running; record how it ended: finished, cancelled or failed (with traceback)."""
    stop = StopRequest()
    previous = None
    if handle_sigterm and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    pid = os.getpid()
    run.set_status(state="running", pid=pid, pid_started=_process_started(pid), started=_now(), ended=None, error=None, traceback=None)
    try:
        yield stop
    except BaseException as exc:
        state = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
        run.set_status(state=state, ended=_now(), error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        raise
    else:
        run.set_status(state="cancelled" if stop else "finished", ended=_now())
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def run_callback(run: RunDir, stop: StopRequest):
    """A transformers TrainerCallback: events.jsonl at every log, stop-and-save on request.

    With several processes the stop request is agreed at every step, so they all stop together.
    """
    from transformers import TrainerCallback

    stop_on_sigterm(stop)

    class RunCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:
                run.append_event({"step": state.global_step, "epoch": state.epoch, "max_steps": state.max_steps, **logs})

        def on_step_end(self, args, state, control, **kwargs):
            if any_process(bool(stop)):
                control.should_training_stop = True
                control.should_save = True  # keep what was learned; --resume continues from it
            return control

    return RunCallback()
