"""The demo project a fresh studio starts with: a few everyday prompts to chat about and rank.

``seed_demo(store)`` is idempotent: it creates the ``demo`` project once and never touches it
again, so the set-up command can run it every time.
"""

from __future__ import annotations

import json
from importlib import resources

from annotations.store import PromptRecord, Store

DEMO_PROJECT = "demo"
DEMO_GUIDELINES = """\
## How to rank
Rank the replies from best (1) to worst. Ties are allowed when two replies are equally good.

1. **Helpful**: does it answer what was asked, completely and correctly?
2. **Honest**: no made-up facts; says so when unsure.
3. **Harmless**: no dangerous, hateful or private content.

When all replies are unusable, skip the prompt and say why.
"""


def demo_prompts() -> list[PromptRecord]:
    """The prompts shipped with the package (annotations/demo/prompts.jsonl)."""
    text = resources.files("annotations").joinpath("demo/prompts.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [PromptRecord(text=r["prompt"], source="demo", category=r.get("category", "")) for r in rows]


def seed_demo(store: Store) -> bool:
    """Create the demo project with its prompts unless a project of that name exists."""
    if any(p.name == DEMO_PROJECT for p in store.projects()):
        return False
    project_id = store.create_project(DEMO_PROJECT, guidelines=DEMO_GUIDELINES, k=2, min_submitted=1)
    store.add_prompts(project_id, demo_prompts())
    return True
