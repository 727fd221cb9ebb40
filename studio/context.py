"""What every screen of one running studio shares: the store, the model registry, loaded models.

Created once by the app at start-up (never at import time), so two studios in one process
(as in the tests) share nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from annotations.store import Store
from rlhf.pool import EnginePool
from rlhf.registry import ModelRegistry


@dataclass
class StudioContext:
    store: Store
    registry: ModelRegistry
    engines: EnginePool

    @classmethod
    def open(cls, db: str | Path, home: Path | None = None, device: str | None = None) -> StudioContext:
        registry = ModelRegistry(home)
        return cls(store=Store(db), registry=registry, engines=EnginePool(registry, device=device))

    def close(self) -> None:
        self.store.close()
