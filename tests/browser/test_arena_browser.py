"""The Arena and Evaluate screens in Chromium against a real studio with two tiny models.

An annotator draws a prompt, starts a battle, asks a follow-up and votes; until the vote the
contenders' names must reach neither the page nor any response the page received (but lists of
every registered model, which the Chat and training screens' model pickers send to everyone).
After the vote the names are revealed and exactly one battle is stored: a double click, and a
second vote forced through a re-enabled button, store nothing more. Then an admin refreshes the
arena leaderboard (open since before the vote) and looks at the levels board and the judged
comparisons. Screenshots: arena_before_vote, arena_after_vote, evaluate_leaderboard,
evaluate_levels, evaluate_judged.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.browser.conftest import ADMIN_PASSWORD, login, start_studio

pytestmark = pytest.mark.browser

NAMES = ("zebra-model", "quokka-model")
PROMPTS = ("Where is the sea?", "Name a capital city.", "Write a haiku about rain.")
VOTES = ("a", "b", "tie", "both_bad")


@pytest.fixture
def arena_studio(tmp_path: Path):
    from annotations.accounts import add_annotator
    from annotations.arena import ArenaSettings, Contender, save_settings
    from annotations.store import PromptRecord, Store
    from rlhf.registry import ModelRegistry
    from tests.tiny import make_tiny_causal_lm

    home = tmp_path / "home"
    registry = ModelRegistry(home)
    for seed, name in enumerate(NAMES, 1):
        registry.add(make_tiny_causal_lm(tmp_path / "models" / name, seed=seed), name=name)
    db = tmp_path / "studio.duckdb"
    with Store(db) as store:
        add_annotator(store, "ana", "ana-password")
        pid = store.create_project("arena-prompts", k=2)
        store.add_prompts(pid, [PromptRecord(p) for p in PROMPTS])
        save_settings(
            store,
            ArenaSettings(
                contenders=tuple(Contender(label=n, model=n) for n in NAMES),
                prompt_project="arena-prompts",
                allow_typed=False,
                temperature=0.0,
                max_new_tokens=8,
                max_turns=2,
            ),
        )
    registered = set(registry.names("causal-lm"))
    assert set(NAMES) <= registered
    proc, url = start_studio(db, home, tmp_path / "studio.log")
    yield {"url": url, "proc": proc, "db": db, "registered": registered}
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


# The page's fetches of the studio's API, copied as they arrive: the client aborts the queue's
# stream once its events are done, so the browser may keep no body for it.
COPY_FETCHES = """
(() => {
  const copies = window.__studio_responses = [];
  const original = window.fetch;
  window.fetch = async function (...args) {
    const response = await original.apply(this, args);
    if (response.url.includes('/gradio_api/') && !response.url.includes('/heartbeat/') && response.body) {
      const copy = {url: response.url, text: '', done: false};
      copies.push(copy);
      const reader = response.clone().body.getReader();
      const decoder = new TextDecoder();
      (async () => {
        try {
          for (;;) {
            const {value, done} = await reader.read();
            if (done) break;
            copy.text += decoder.decode(value, {stream: true});
          }
        } catch (error) {
          copy.error = String(error);
        }
        copy.done = true;
      })();
    }
    return response;
  };
})();
"""


class Responses:
    """What the page received: every response's body the browser kept, and copies of its API fetches as they streamed."""

    def __init__(self, page) -> None:
        self.page = page
        self.started: list = []
        self.finished: list = []
        self.failed: list = []
        page.on("request", lambda request: self.started.append(request))
        page.on("requestfinished", lambda request: self.finished.append(request))
        page.on("requestfailed", lambda request: self.failed.append(request))

    def settle(self, timeout: float = 15) -> None:
        """Wait until every request but the heartbeat has ended (finished, or aborted by the page)."""
        deadline = time.monotonic() + timeout
        while pending := [r.url for r in self.started if "/heartbeat/" not in r.url and r not in self.finished and r not in self.failed]:
            assert time.monotonic() < deadline, f"requests still open: {pending}"
            self.page.wait_for_timeout(100)

    def texts(self) -> list[tuple[str, str]]:
        """(url, text) of every text response the browser kept, then of every copied API fetch."""
        out = []
        for request in list(self.finished):
            response = request.response()
            if response is None:
                continue
            kind = (response.headers.get("content-type") or "").split(";")[0]
            if not (kind.startswith("text/") or kind in ("application/json", "application/javascript")):
                continue
            try:
                body = response.body()
            except Exception:  # noqa: BLE001 - a redirect, or a body the browser no longer keeps
                continue
            out.append((response.url, body.decode("utf-8", "replace")))
        copies = self.page.evaluate("() => window.__studio_responses.map(c => [c.url, c.text])")
        return out + [(f"{url} (copied in the page)", text) for url, text in copies]


EMBEDDED = re.compile(r"window\.\w+ = (?=[{\[])")  # the page's embedded config and API description
MODEL_LIST = "<a list of every registered model>"


def _lists_every_model(node, registered: set[str]) -> bool:
    """A dropdown's choices, an enum or a Literal[...] type naming every registered causal LM (and perhaps more)."""
    if isinstance(node, str):
        return "Literal[" in node and all(repr(name) in node for name in registered)
    if isinstance(node, dict):
        props = node.get("props") if isinstance(node.get("props"), dict) else node
        return _lists_every_model(props.get("choices"), registered)
    if isinstance(node, list) and node and all(isinstance(c, str) or (isinstance(c, list) and len(c) == 2) for c in node):
        values = {c[1] if isinstance(c, list) and len(c) == 2 else c for c in node}
        return all(isinstance(v, str) for v in values) and registered <= values
    return False


def _scrub(node, registered: set[str]):
    """``node`` with every list of all registered models (a component, an update, an enum) replaced by MODEL_LIST."""
    if _lists_every_model(node, registered):
        return MODEL_LIST
    if isinstance(node, dict):
        return {k: _scrub(v, registered) for k, v in node.items()}
    if isinstance(node, list):
        return [_scrub(v, registered) for v in node]
    return node


def _without_model_lists(body: str, registered: set[str]) -> str:
    """``body`` with the studio's model pickers' lists taken out, and nothing else.

    The page's config holds every screen's components, hidden ones included, and the model
    pickers (Chat, Prompt lab, the training tabs) list every registered model, as does the API
    description; the Chat screen's load event sends that list again. A list of all models says
    which exist, not which one answers on which side of a battle; anywhere else the names must
    not be.
    """
    if body.startswith(("{", "[")):
        try:
            return json.dumps(_scrub(json.loads(body), registered))
        except ValueError:
            return body
    if body.startswith("data:"):  # server-sent events, one JSON message a line
        lines = []
        for line in body.splitlines():
            try:
                line = "data: " + json.dumps(_scrub(json.loads(line[5:]), registered)) if line.startswith("data:") else line
            except ValueError:  # a stream copied until the page aborted it may end mid-message
                pass
            lines.append(line)
        return "\n".join(lines)
    out, done = [], 0
    for match in EMBEDDED.finditer(body):  # the page itself
        if match.start() < done:
            continue
        try:
            embedded, end = json.JSONDecoder().raw_decode(body, match.end())
        except ValueError:  # a script's object literal, not JSON
            continue
        out += [body[done : match.end()], json.dumps(_scrub(embedded, registered))]
        done = end
    return "".join(out) + body[done:]


def _votes_enabled(page, timeout: int = 30_000) -> None:
    page.wait_for_function(
        "(ids) => ids.every(id => { const b = document.querySelector('#' + id); return b && !b.disabled; })",
        arg=[f"arena-vote-{v}" for v in VOTES],
        timeout=timeout,
    )


def _wait_text(page, elem_id: str, *texts: str, timeout: int = 30_000) -> None:
    page.wait_for_function(
        "([id, texts]) => texts.every(t => (document.querySelector('#' + id) || {}).innerText?.includes(t))",
        arg=[elem_id, list(texts)],
        timeout=timeout,
    )


def _no_names(page, responses: Responses, registered: set[str], when: str) -> None:
    """Neither contender's name in the page or in any response it received, but in lists of all models."""
    html = _without_model_lists(page.content(), registered)
    for name in NAMES:
        at = html.find(name)
        assert at < 0, f"{when}: {name} is in the page: ...{html[max(0, at - 500) : at + 100]}..."
    responses.settle()
    checked = responses.texts()
    streams = [body for url, body in checked if "/gradio_api/queue/data" in url]
    assert any('<div class=\\"md-role\\">Assistant' in body for body in streams), f"{when}: the replies' stream was not read"
    for url, body in checked:
        text = _without_model_lists(body, registered)
        for name in NAMES:
            at = text.find(name)
            assert at < 0, f"{when}: {name} is in the response of {url}: ...{text[max(0, at - 500) : at + 100]}..."


def test_blind_battle_then_the_leaderboard(browser, arena_studio, screenshot_dir: Path) -> None:
    url, registered = arena_studio["url"], arena_studio["registered"]
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    context.add_init_script(COPY_FETCHES)
    page = context.new_page()
    responses = Responses(page)
    login(page, url, "ana", "ana-password")

    # An admin has the Evaluate screen open already: no votes yet.
    admin_context = browser.new_context(viewport={"width": 1400, "height": 1000})
    admin = admin_context.new_page()
    login(admin, url, "admin", ADMIN_PASSWORD)
    admin.get_by_role("tab", name="Evaluate").click()
    _wait_text(admin, "eval-board-note", "0 arena votes")
    assert "needs battles between two models" in admin.inner_text("#eval-arena-matrix")

    # -- the annotator: Arena visible, Evaluate, Admin and the arena settings not -----------------
    tabs = [t.strip() for t in page.locator("button[role=tab]:visible").all_inner_texts()]
    assert "Arena" in tabs
    assert "Evaluate" not in tabs and "Admin" not in tabs
    page.get_by_role("tab", name="Arena").click()
    page.locator("#arena-draw").wait_for()
    assert not page.locator("#arena-settings").is_visible()
    assert not page.get_by_text("Arena settings (admins)").is_visible()

    # -- draw a prompt, start the battle, wait for both replies -----------------------------------
    page.click("#arena-draw")
    page.wait_for_function(
        "(prompts) => prompts.includes(document.querySelector('#arena-prompt textarea').value)", arg=list(PROMPTS), timeout=15_000
    )
    prompt = page.input_value("#arena-prompt textarea")
    page.click("#arena-start")
    _votes_enabled(page)
    for pane in ("#arena-a", "#arena-b"):
        roles = [r.strip() for r in page.locator(f"{pane} .md-role").all_text_contents()]
        assert roles == ["User", "Assistant"], f"{pane}: {roles}"
        turns = page.locator(f"{pane} .md-turn")
        assert prompt in turns.nth(0).inner_text()
        assert turns.nth(1).locator(".md-text").inner_text().strip(), f"{pane}: an empty reply"
    assert "Turn 1 of 2" in page.inner_text("#arena-turns")
    _no_names(page, responses, registered, "after the first turn")

    # -- one follow-up, sent to both ------------------------------------------------------------
    page.fill("#arena-follow textarea", "Say more, please.")
    page.click("#arena-send")
    page.wait_for_function(
        "() => ['#arena-a', '#arena-b'].every(p => document.querySelectorAll(p + ' .md-turn').length === 4)", timeout=30_000
    )
    _votes_enabled(page)
    for pane in ("#arena-a", "#arena-b"):
        assert "Say more, please." in page.inner_text(pane)
    assert page.locator("#arena-send").is_disabled()  # max_turns = 2: no third turn
    _no_names(page, responses, registered, "after the follow-up")
    page.screenshot(path=str(screenshot_dir / "arena_before_vote.png"), full_page=True)

    # -- a double click on "A is better": one vote, then the names ------------------------------
    config = page.evaluate("() => window.gradio_config")
    vote_a = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "arena_vote_a")
    page.locator("#arena-vote-a").dblclick()
    _wait_text(page, "arena-result", *NAMES)
    page.wait_for_function("() => document.querySelector('#arena-result').innerText.trim().startsWith('You voted')")  # no timer
    result = page.inner_text("#arena-result").strip()
    assert result.startswith("You voted A is better. Model A was "), result
    assert all(page.locator(f"#arena-vote-{v}").is_disabled() for v in VOTES)
    assert page.locator("#arena-send").is_disabled()
    # The same capture sees the names once they are sent: the checks above could have failed.
    deadline = time.monotonic() + 10
    while not any(all(n in body for n in NAMES) for url, body in responses.texts() if "/queue/data" in url):
        assert time.monotonic() < deadline, "the vote's reply, naming both models, was not captured"
        page.wait_for_timeout(200)
    sent = [r for r in responses.started if "/queue/join" in r.url and json.loads(r.post_data or "{}").get("fn_index") == vote_a]
    assert 1 <= len(sent) <= 2, sent  # Gradio drops a click while the first one's event is pending
    page.screenshot(path=str(screenshot_dir / "arena_after_vote.png"), full_page=True)
    # A vote that gets through anyway (a button re-enabled in the page, a retried request) changes nothing.
    vote_b = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "arena_vote_b")
    page.evaluate("() => document.querySelector('#arena-vote-b').removeAttribute('disabled')")
    page.click("#arena-vote-b")
    deadline = time.monotonic() + 10
    while not [r for r in responses.finished if "/queue/join" in r.url and json.loads(r.post_data or "{}").get("fn_index") == vote_b]:
        assert time.monotonic() < deadline, "the second vote was not sent"
        page.wait_for_timeout(100)
    responses.settle()
    page.wait_for_function(  # the same reveal as before: still "You voted A is better"
        "(text) => document.querySelector('#arena-result').innerText.trim() === text", arg=result, timeout=10_000
    )
    context.close()

    # -- the admin: the leaderboard, the levels board, the judged comparisons ---------------------
    admin.click("#eval-refresh")
    _wait_text(admin, "eval-arena-table", *NAMES)
    _wait_text(admin, "eval-board-note", "1 arena vote")
    admin.wait_for_function("() => document.querySelectorAll('#eval-arena-matrix svg.heatmap').length === 1", timeout=15_000)
    matrix = admin.inner_text("#eval-arena-matrix")
    assert all(name in matrix for name in NAMES) and "1.00" in matrix and "0.00" in matrix
    winner, loser = sorted(NAMES, key=lambda name: f"Model A was {name}" not in result)  # A won the only vote
    table = admin.inner_text("#eval-arena-table")
    assert table.index(winner) < table.index(loser) and "1 / 0 / 0" in table and "0 / 0 / 1" in table, table
    admin.screenshot(path=str(screenshot_dir / "evaluate_leaderboard.png"), full_page=True)
    admin.get_by_role("tab", name="Levels board").click()
    _wait_text(admin, "eval-levels-table", *NAMES)
    levels = admin.inner_text("#eval-levels-table")
    assert len(re.findall(r"\d+ \(provisional \(1 battle\)\), 1 battle", levels)) == 2, levels  # both contenders' ratings
    admin.screenshot(path=str(screenshot_dir / "evaluate_levels.png"), full_page=True)
    admin.get_by_role("tab", name="Judged comparisons").click()
    admin.locator("#eval-launch").wait_for()
    admin.screenshot(path=str(screenshot_dir / "evaluate_judged.png"), full_page=True)
    admin_context.close()

    # -- the store: exactly one battle, both sides two turns ------------------------------------
    from annotations.arena import battles
    from annotations.store import Store

    proc = arena_studio["proc"]
    proc.terminate()
    proc.wait(timeout=30)
    with Store(arena_studio["db"]) as store:
        stored = battles(store)
    assert len(stored) == 1, stored
    battle = stored[0]
    assert battle.annotator == "ana" and battle.vote == "a"  # the forced "B is better" stored nothing
    assert {battle.contender_a, battle.contender_b} == set(NAMES)
    assert battle.prompt == prompt and battle.prompt_source == "project:arena-prompts"
    assert len(battle.conversation_a) == len(battle.conversation_b) == 4
    assert battle.conversation_a[2] == {"role": "user", "content": "Say more, please."}
    assert f"Model A was {battle.contender_a}" in result and f"model B was {battle.contender_b}" in result
