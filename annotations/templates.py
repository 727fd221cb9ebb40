"""Saved prompt templates of the prompt lab: a name and a JSON body (system, template, demonstrations, ...).

    save_template(store, "qa-fewshot", {"template": "Q: {input}", "demos": "nearest", "k": 3})
    template_names(store); load_template(store, "qa-fewshot")

The store does not interpret the body; ``rlhf.prompting.PromptTemplate`` does.
"""

from __future__ import annotations

import json

from annotations.store import Store, StoreError, check_name


def save_template(store: Store, name: str, body: dict) -> None:
    """Save (or replace) a template under ``name``."""
    name = check_name(name, "a template")
    payload = json.dumps(body)
    with store.transaction() as cur:
        cur.execute(
            "INSERT INTO prompt_templates (name, body) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET body = excluded.body, updated = now()",
            [name, payload],
        )


def template_names(store: Store) -> list[str]:
    return [n for (n,) in store.query("SELECT name FROM prompt_templates ORDER BY name")]


def load_template(store: Store, name: str) -> dict:
    rows = store.query("SELECT body FROM prompt_templates WHERE name = ?", [name])
    if not rows:
        raise StoreError(f"no template called {name!r}; saved ones: {', '.join(template_names(store)) or 'none'}")
    return json.loads(rows[0][0])
