"""Small caches of loaded models, so the chat and the reward box do not reload a model per request.

One pool belongs to one running studio (it is created by the app, never at import time).
It keeps the most recently used ``capacity`` models and loads each at most once, even when
several requests ask for it at the same moment.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from rlhf.generation import GenerationEngine
from rlhf.loading import load_causal_lm
from rlhf.modelfiles import ModelError
from rlhf.registry import ModelRegistry
from rlhf.scoring import RewardScorer

T = TypeVar("T")


class _Cache(Generic[T]):
    """The most recently used ``capacity`` objects by name; each is loaded at most once."""

    def __init__(self, load: Callable[[str], T], capacity: int) -> None:
        self._load = load
        self.capacity = max(1, capacity)
        self._items: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> T:
        with self._lock:
            if name in self._items:
                self._items.move_to_end(name)
                return self._items[name]
            item = self._load(name)
            self._items[name] = item
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return item

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._items)


class EnginePool:
    """Loaded generation engines by model name, least recently used dropped first."""

    def __init__(self, registry: ModelRegistry, capacity: int = 2, device: str | None = None) -> None:
        self.registry = registry
        self.device = device
        self._cache: _Cache[GenerationEngine] = _Cache(self._load, capacity)

    def _load(self, name: str) -> GenerationEngine:
        model, tokenizer = load_causal_lm(name, self.registry, device=self.device)
        return GenerationEngine(model, tokenizer)

    def get(self, name: str) -> GenerationEngine:
        """The engine for ``name``, loading the model if it is not cached."""
        return self._cache.get(name)

    def loaded(self) -> list[str]:
        return self._cache.loaded()


class ScorerPool:
    """Loaded reward models by registry name (for the studio's "try it" box and reward sources)."""

    def __init__(self, registry: ModelRegistry, capacity: int = 2, device: str | None = None) -> None:
        self.registry = registry
        self.device = device
        self._cache: _Cache[RewardScorer] = _Cache(self._load, capacity)

    def _load(self, name: str) -> RewardScorer:
        entry = self.registry.get(name)
        if entry.kind != "reward-model":
            raise ModelError(f"{name} is a {entry.kind} model, not a reward model")
        return RewardScorer.load(self.registry.resolve(name), device=self.device)

    def get(self, name: str) -> RewardScorer:
        return self._cache.get(name)


class EncoderPool:
    """Loaded sentence encoders by registry name (nearest-neighbour demonstrations in the prompt lab)."""

    def __init__(self, registry: ModelRegistry, capacity: int = 1, device: str | None = None) -> None:
        from rlhf.embedding import SentenceEncoder

        self._cache: _Cache[SentenceEncoder] = _Cache(lambda name: SentenceEncoder.load(name, registry, device), capacity)

    def get(self, name: str):
        return self._cache.get(name)
