"""A small cache of loaded models, so the chat does not reload a model for every message.

One pool belongs to one running studio (it is created by the app, never at import time).
It keeps the most recently used ``capacity`` models and loads each at most once, even when
several requests ask for it at the same moment.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from rlhf.generation import GenerationEngine
from rlhf.loading import load_causal_lm
from rlhf.registry import ModelRegistry


class EnginePool:
    """Loaded generation engines by model name, least recently used dropped first."""

    def __init__(self, registry: ModelRegistry, capacity: int = 2, device: str | None = None) -> None:
        self.registry = registry
        self.capacity = max(1, capacity)
        self.device = device
        self._engines: OrderedDict[str, GenerationEngine] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> GenerationEngine:
        """The engine for ``name``, loading the model if it is not cached."""
        with self._lock:
            if name in self._engines:
                self._engines.move_to_end(name)
                return self._engines[name]
            model, tokenizer = load_causal_lm(name, self.registry, device=self.device)
            engine = GenerationEngine(model, tokenizer)
            self._engines[name] = engine
            while len(self._engines) > self.capacity:
                self._engines.popitem(last=False)
            return engine

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._engines)
