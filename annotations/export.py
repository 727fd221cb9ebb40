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


def export_best_replies(store: Store, project: str | int, path: Path) -> int:
    """Instruction-tuning data from rankings: each ranked prompt with its best reply (lowest mean rank).

    Lines are {"id", "prompt" or "messages", "response"}; prompts without a submitted ranking
    are left out. StoreError when no prompt of the project has been ranked.
    """
    proj = store.project(project)
    rows = store.query(
        "SELECT r.prompt_id, r.ranks FROM rankings r JOIN prompts p ON p.id = r.prompt_id "
        "WHERE p.project_id = ? AND r.status = 'submitted' AND NOT coalesce(r.both_bad, false)",
        [proj.id],
    )
    totals: dict[int, dict[int, list[int]]] = {}
    for prompt_id, ranks in rows:
        for reply_id, rank in json.loads(ranks).items():
            totals.setdefault(prompt_id, {}).setdefault(int(reply_id), []).append(int(rank))
    if not totals:
        raise StoreError(f"project {proj.name!r} has no submitted rankings yet; rank some replies first")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    count = 0
    with tmp.open("w") as handle:
        for prompt_id, by_reply in sorted(totals.items()):
            best = min(by_reply, key=lambda rid: (sum(by_reply[rid]) / len(by_reply[rid]), rid))
            prompt = store.prompt(prompt_id)
            reply = next(r for r in store.replies(prompt_id) if r.id == best)
            row = {
                "id": prompt_id,
                **(
                    {"messages": [*prompt.messages, {"role": "assistant", "content": reply.text}]}
                    if prompt.messages
                    else {"prompt": prompt.text, "response": reply.text}
                ),
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


def labelled_records(store: Store, project: str | int, limit: int | None = None) -> list[dict]:
    """A project's prompts as labelled records for the prompt lab: input, output, category, metadata.

    The output is the best-ranked reply when the prompt has rankings, else its first reply (an
    imported dolly / alpaca answer), else missing.
    """
    proj = store.project(project)
    ranks: dict[int, dict[int, list[int]]] = {}
    for prompt_id, payload in store.query(
        "SELECT r.prompt_id, r.ranks FROM rankings r JOIN prompts p ON p.id = r.prompt_id "
        "WHERE p.project_id = ? AND r.status = 'submitted'",
        [proj.id],
    ):
        for reply_id, rank in json.loads(payload).items():
            ranks.setdefault(prompt_id, {}).setdefault(int(reply_id), []).append(int(rank))
    records = []
    for prompt in store.prompts(proj.id, limit=limit):
        replies = store.replies(prompt.id)
        record = {"id": prompt.id, "input": prompt.text, "category": prompt.category, **(prompt.metadata or {})}
        if prompt.id in ranks:
            by_reply = ranks[prompt.id]
            best = min(by_reply, key=lambda rid: (sum(by_reply[rid]) / len(by_reply[rid]), rid))
            record["output"] = next((r.text for r in replies if r.id == best), None)
        elif replies:
            record["output"] = replies[0].text
        records.append(record)
    return records
