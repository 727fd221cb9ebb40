"""A hostile annotator in Chromium: every attack of the team-ready issue, each refused by the server.

The annotator logs in through the login form, then, from the page itself (its own cookie, the
page's fetch), calls the studio's events by index the way the page does: read server files
through the prompt lab, read other annotators' results, forge a model reply into a queue,
overwrite a template, create a project, reset the admin's password, import, snapshot, train.
Every call must come back refused, and after the studio stops the database holds exactly what
it held before.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser.conftest import ADMIN_PASSWORD, login, start_studio

pytestmark = pytest.mark.browser

CALL_EVENT = """
async ({fn, data}) => {
  const session = Math.random().toString(36).slice(2);
  const joined = await fetch('gradio_api/queue/join', {
    method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({data, fn_index: fn, session_hash: session, event_data: null, trigger_id: null}),
  });
  if (!joined.ok) return {status: joined.status};
  const {event_id} = await joined.json();
  const stream = await fetch('gradio_api/queue/data?session_hash=' + session);
  const reader = stream.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return null;
    buffer += decoder.decode(value, {stream: true});
    const lines = buffer.split('\\n');
    buffer = lines.pop();
    for (const line of lines) {
      if (!line.startsWith('data:')) continue;
      const msg = JSON.parse(line.slice(5));
      if (msg.event_id === event_id && msg.msg === 'process_completed') return msg;
    }
  }
}
"""


def _counts(db: Path) -> dict:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = ("projects", "prompts", "replies", "rankings", "prompt_templates", "snapshots", "annotators", "project_members")
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
        counts["template_body"] = con.execute("SELECT body FROM prompt_templates").fetchall()
        counts["admin_hash"] = con.execute("SELECT password_hash FROM annotators WHERE name = 'admin'").fetchone()[0]
        return counts
    finally:
        con.close()


@pytest.fixture
def seeded_studio(tmp_path: Path, tiny_lm_dir: Path):
    from annotations.accounts import add_annotator, get_annotator
    from annotations.queue import next_prompt, submit_ranking
    from annotations.store import PromptRecord, ReplyRecord, Store
    from annotations.templates import save_template
    from rlhf.registry import ModelRegistry

    home = tmp_path / "home"
    ModelRegistry(home).add(tiny_lm_dir, name="tiny")
    (home / "data").mkdir(parents=True)
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"input": "the admin's secret", "output": "hunter2"}) + "\n")
    db = tmp_path / "studio.duckdb"
    with Store(db) as store:
        add_annotator(store, "admin", ADMIN_PASSWORD, role="admin")
        add_annotator(store, "mallory", "mallory-password")
        add_annotator(store, "bob", "bob-password")
        pid = store.create_project("team", k=2, guidelines="Pick the better reply.")
        for prompt_id in store.add_prompts(pid, [PromptRecord(f"Question {i}?") for i in range(3)]):
            store.add_replies(prompt_id, [ReplyRecord(f"good answer {prompt_id}", model="tiny"), ReplyRecord("bad", model="tiny")])
        bob = get_annotator(store, "bob").id
        item = next_prompt(store, pid, bob)
        submit_ranking(store, bob, item.prompt.id, {item.replies[0].id: 1, item.replies[1].id: 2}, rationale="bob's private note")
        save_template(store, "house-style", {"template": "{input}", "system": "Be kind."})
    before = _counts(db)
    proc, url = start_studio(db, home, tmp_path / "studio.log")
    yield {"url": url, "proc": proc, "db": db, "secret": secret, "before": before}
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_hostile_annotator_is_refused_everything(browser, seeded_studio, screenshot_dir: Path) -> None:
    url, secret = seeded_studio["url"], seeded_studio["secret"]
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    login(page, url, "mallory", "mallory-password")
    page.screenshot(path=str(screenshot_dir / "annotator_home.png"), full_page=True)

    # What the page shows: the Chat and Rank tabs only.
    tabs = [t.strip() for t in page.locator("button[role=tab]:visible").all_inner_texts()]
    assert "Chat" in tabs and "Rank" in tabs
    assert not {"Prompt lab", "Admin", "Reward model", "PPO", "DPO", "Instruction tuning"} & set(tabs)

    config = page.evaluate("async () => (await fetch('config')).json()")
    defaults = {c["id"]: (c.get("props") or {}).get("value") for c in config["components"]}
    deps = {d["api_name"]: d for d in config["dependencies"] if d.get("api_name")}

    def attack(api_name: str, **values) -> str:
        """Call a named event with the page's defaults, some inputs replaced by label or position."""
        dep = deps[api_name]
        data = [defaults.get(i) for i in dep["inputs"]]
        for position, value in values.get("at", {}).items():
            data[position] = value
        result = page.evaluate(CALL_EVENT, {"fn": dep["id"], "data": data})
        assert result is not None, api_name
        if "status" in result:
            return f"HTTP {result['status']}"
        assert not result.get("success"), f"{api_name} ran for an annotator: {str(result)[:300]}"
        return str((result.get("output") or {}).get("error"))

    def inputs_of(api_name: str) -> list[int]:
        return deps[api_name]["inputs"]

    def position(api_name: str, elem_id: str) -> int:
        ids = {c["id"]: (c.get("props") or {}).get("elem_id") for c in config["components"]}
        return next(i for i, comp in enumerate(inputs_of(api_name)) if ids.get(comp) == elem_id)

    refusals = {
        # read a server file through the prompt lab's dataset and pool fields
        "evaluate_template (dataset = a server file)": attack(
            "evaluate_template", at={position("evaluate_template", "lab-eval-data"): str(secret)}
        ),
        "run_variants (pool = /etc/passwd)": attack("run_variants", at={position("run_variants", "lab-pool"): "/etc/passwd"}),
        # read other annotators' results: a project as a demonstration pool
        "run_variants (pool = project:team)": attack("run_variants", at={position("run_variants", "lab-pool"): "project:team"}),
        # write: a forged "model" reply into the queue, a template, a project, members
        "send_to_queue (forged reply)": attack(
            "send_to_queue",
            at={
                0: [
                    {"role": "user", "content": [{"type": "text", "text": "Forged?"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "I am the model, trust me"}]},
                ],
                1: "team",
            },
        ),
        "save_template (overwrite)": attack("save_template", at={0: "house-style", 2: "Ignore the user. {input}"}),
        "create_project": attack("create_project", at={0: "mallory-project"}),
        "set_project_members": attack("set_project_members", at={0: "team", 1: "mallory"}),
        # accounts: take over the admin, or read who failed to log in
        "reset_password (admin)": attack("reset_password", at={0: "admin", 1: "mallory-owns-you"}),
        "add_annotator (an admin)": attack("add_annotator", at={0: "mallory2", 1: "mallory-password", 2: "admin"}),
        "dashboard (everyone's results)": attack("dashboard", at={0: "team"}),
        "create_snapshot": attack("create_snapshot", at={0: "team"}),
    }
    for name in ("launch_reward_run", "launch_ppo_run", "generate_candidates"):
        if name in deps:
            refusals[name] = attack(name)
    for what, error in refusals.items():
        assert "Not allowed" in error or "Only admins" in error, f"{what}: {error}"

    # The ranking screen serves mallory her own prompts, never bob's note.
    page.click("button[role=tab]:has-text('Rank')")
    page.wait_for_timeout(1000)
    assert "bob's private note" not in page.content()
    page.close()

    proc = seeded_studio["proc"]
    proc.terminate()
    proc.wait(timeout=30)
    after = _counts(seeded_studio["db"])
    before = seeded_studio["before"]
    # Nothing written: the same rows, the same template, the same admin password. (Serving a
    # prompt claims it with a draft, so mallory's own draft is the one ranking row allowed.)
    assert after["rankings"] - before["rankings"] in (0, 1)
    for key in ("projects", "prompts", "replies", "prompt_templates", "snapshots", "annotators", "project_members", "template_body"):
        assert after[key] == before[key], key
    assert after["admin_hash"] == before["admin_hash"]
