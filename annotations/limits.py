"""Size limits on what users put into the store, with sane defaults a deployment can change.

A 2 MB "prompt" is almost certainly a mistake or an attack: it fills every annotator's screen
and costs gigabytes when a model is asked to answer it. Imports refuse (or, with "leave bad
records out", skip) records over these limits with their line number; the store refuses them
on every other path too. Each limit can be changed with an environment variable:

| limit | default | variable |
|---|---|---|
| prompt (all turns together) | 20,000 characters | ``STUDIO_MAX_PROMPT_CHARS`` |
| reply | 20,000 characters | ``STUDIO_MAX_REPLY_CHARS`` |
| rationale or skip reason | 4,000 characters | ``STUDIO_MAX_RATIONALE_CHARS`` |
| project guidelines | 50,000 characters | ``STUDIO_MAX_GUIDELINES_CHARS`` |
| JSON nesting in an imported record | 20 levels | ``STUDIO_MAX_JSON_DEPTH`` |

    from annotations.limits import Limits
    limits = Limits.from_env()
    limits.check("reply", text)        # StoreError naming the limit and how to change it
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from annotations.store import StoreError

_ENV = {
    "prompt": "STUDIO_MAX_PROMPT_CHARS",
    "reply": "STUDIO_MAX_REPLY_CHARS",
    "rationale": "STUDIO_MAX_RATIONALE_CHARS",
    "guidelines": "STUDIO_MAX_GUIDELINES_CHARS",
    "json_depth": "STUDIO_MAX_JSON_DEPTH",
}


@dataclass(frozen=True)
class Limits:
    prompt: int = 20_000
    reply: int = 20_000
    rationale: int = 4_000
    guidelines: int = 50_000
    json_depth: int = 20

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        """The defaults, overridden by the STUDIO_MAX_* variables (positive integers)."""
        env = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = env.get(_ENV[f.name])
            if raw is None or not raw.strip():
                continue
            try:
                value = int(raw)
            except ValueError as exc:
                raise StoreError(f"{_ENV[f.name]} must be a whole number, got {raw!r}") from exc
            if value < 1:
                raise StoreError(f"{_ENV[f.name]} must be at least 1, got {value}")
            values[f.name] = value
        return cls(**values)

    def check(self, what: str, text: str, where: str = "") -> None:
        """Refuse ``text`` if it is longer than the limit for ``what`` (prompt, reply, rationale, guidelines)."""
        limit = getattr(self, what)
        if len(text) > limit:
            place = f"{where}: " if where else ""
            raise StoreError(
                f"{place}the {what} has {len(text):,} characters, more than the limit of {limit:,} (shorten it, or raise {_ENV[what]})"
            )
