"""Training runs started from the studio: each one a subprocess running the same command as the CLI.

The studio writes ``<runs>/<id>/config.yaml`` from a typed config, then starts
``python -m rlhf train <kind> --resume <run folder>`` with its output going to the run's
``run.log``. The subprocess never opens the database (snapshots are files), so the studio
stays the store's single writer. Everything the screens show is read back from the run folder,
so a restarted studio finds the runs still going. Cancel sends SIGTERM: the trainer stops at
the next step boundary and saves what it has. A config is checked completely
(:func:`rlhf.preflight.check_run_config`) before its run folder is made; the folder is owner-only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.config import config_to_dict, save_config
from rlhf.launch import train_command
from rlhf.paths import open_private, private_dir
from rlhf.preflight import check_run_config
from rlhf.registry import ModelRegistry
from rlhf.runs import RunDir, list_runs


@dataclass(frozen=True)
class RunState:
    """What the screens show about a run: its state word and whether it still runs."""

    state: str  # created | running | finished | failed | cancelled | lost
    alive: bool
    error: str = ""


class RunLauncher:
    """Starts, watches and cancels the training subprocesses of one studio."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.env = env or {}
        self._children: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def start(self, kind: str, cfg: Any, registry: ModelRegistry | None = None) -> RunDir:
        """Check ``cfg`` completely, then make its run folder and start training it in a subprocess.

        A config that cannot run (unreadable data, unknown models, a ``register_as`` the registry
        would refuse) raises ConfigError and leaves no run folder behind.
        """
        check_run_config(kind, cfg, registry or ModelRegistry(self.env.get("STUDIO_HOME") or None))
        private_dir(self.root)
        run = RunDir.create(self.root, kind, config_to_dict(cfg))
        save_config(cfg, run.config_path)
        with open_private(run.log_path, "a") as log:
            child = subprocess.Popen(
                train_command(kind, run.path.resolve()),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                start_new_session=True,  # a Ctrl+C in the studio's terminal does not kill the run
            )
        run.set_status(pid=child.pid)
        with self._lock:
            self._children[run.id] = child
        return run

    def runs(self, kind: str | None = None) -> list[RunDir]:
        self.reap()
        return list_runs(self.root, kind)

    def get(self, run_id: str) -> RunDir:
        run = RunDir(self.root / Path(run_id).name)
        if not run.status_path.is_file():
            raise ValueError(f"no run {run_id!r} under {self.root}")
        return run

    def reap(self) -> None:
        """Collect finished children; a child that died without saying how is marked failed."""
        with self._lock:
            done = {rid: c for rid, c in self._children.items() if c.poll() is not None}
            for rid in done:
                del self._children[rid]
        for rid, child in done.items():
            run = RunDir(self.root / rid)
            if run.status().get("state") in ("created", "running"):
                if child.returncode == -signal.SIGTERM:
                    run.set_status(state="cancelled", error="stopped before training began")
                else:
                    run.set_status(state="failed", error=f"the training process exited with status {child.returncode}; see run.log")

    def state(self, run: RunDir) -> RunState:
        self.reap()
        status = run.status()
        state = status.get("state", "unknown")
        with self._lock:
            child = self._children.get(run.id)
        if state in ("created", "running"):
            if child is not None and child.poll() is None:
                return RunState(state, True)
            if state == "running" and run.is_alive():
                return RunState(state, True)  # started by an earlier studio or from the CLI
            if state == "created" and child is None and not status.get("pid"):
                return RunState(state, False)
            return RunState("lost", False, "the training process is gone without reporting; see the log")
        return RunState(state, False, status.get("error") or "")

    def cancel(self, run_id: str) -> str:
        """SIGTERM the run's process; it stops at the next step and saves."""
        run = self.get(run_id)
        current = self.state(run)
        if not current.alive:
            raise ValueError(f"run {run.id} is not running ({current.state})")
        pid = int(run.status()["pid"])
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError as exc:
            raise ValueError(f"run {run.id} has already stopped") from exc
        return f"Asked run {run.id} to stop; it saves at the next step."
