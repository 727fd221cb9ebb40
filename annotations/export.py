"""Export a project's prompts to a JSONL file, for training runs (which never open the database).

    n = export_prompts(store, "support-bot", Path("runs/prompt-sets/support-bot.jsonl"))

Each line is {"id", "messages"} for conversations or {"id", "prompt"} for plain prompts, the
input format of ``rlhf`` prompt files. The file is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

from annotations.store import Store, StoreError


def export_prompts(store: Store, project: str | int, path: Path) -> int:
    """Write every prompt of ``project``; StoreError when it has none."""
    proj = store.project(project)
    prompts = store.prompts(proj.id)
    if not prompts:
        raise StoreError(f"project {proj.name!r} has no prompts; import some first")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    with tmp.open("w") as handle:
        for p in prompts:
            row = {"id": p.id, "messages": p.messages} if p.messages else {"id": p.id, "prompt": p.text}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return len(prompts)
