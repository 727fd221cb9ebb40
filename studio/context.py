"""What every screen of one running studio shares: the store, the model registry, loaded models.

Created once by the app at start-up (never at import time), so two studios in one process
(as in the tests) share nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from annotations.store import Store
from rlhf.pool import EncoderPool, EnginePool, ScorerPool
from rlhf.registry import ModelRegistry
from studio.candidates import CandidateJobs
from studio.launcher import RunLauncher
from studio.login_guard import LoginGuard, Sessions
from studio.permissions import default_data_roots


@dataclass
class StudioContext:
    store: Store
    registry: ModelRegistry
    engines: EnginePool
    jobs: CandidateJobs
    launcher: RunLauncher
    scorers: ScorerPool
    encoders: EncoderPool
    data_roots: list[Path]
    logins: LoginGuard
    sessions: Sessions

    @classmethod
    def open(cls, db: str | Path, home: Path | None = None, device: str | None = None) -> StudioContext:
        registry = ModelRegistry(home)
        store = Store(db)
        engines = EnginePool(registry, device=device)
        # Training runs live beside the database and find models in the same STUDIO_HOME.
        launcher = RunLauncher(store.path.resolve().parent / "runs", env={"STUDIO_HOME": str(registry.home)})
        return cls(
            store=store,
            registry=registry,
            engines=engines,
            jobs=CandidateJobs(store, engines, registry),
            launcher=launcher,
            scorers=ScorerPool(registry, device=device),
            encoders=EncoderPool(registry, device=device),
            data_roots=default_data_roots(registry.home, store.path.resolve().parent),
            logins=LoginGuard(store),
            sessions=Sessions(),
        )

    @property
    def snapshot_root(self) -> Path:
        """Snapshots live beside the database file."""
        return self.store.path.resolve().parent / "snapshots"

    def close(self) -> None:
        self.logins.close()
        self.store.close()
