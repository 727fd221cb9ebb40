"""The annotation loop in Chromium: admin sets up, an annotator ranks, the store holds it.

One real studio (tiny model, fresh database) runs the whole scenario in order; the store is
checked at the end, after the studio has stopped and let go of the file. Screenshots of every
screen land in screenshots/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser.conftest import ADMIN_PASSWORD, login, pick, start_studio

pytestmark = pytest.mark.browser

PROMPTS = [
    {"prompt": "Name three primary colours. <script>alert('x')</script>"},
    {"prompt": "What is 2 + 2?"},
    {"prompt": "Write a limerick about a cat."},
    {"prompt": "Give one tip for better sleep."},
]


@pytest.fixture(scope="module")
def annotation_studio(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path, tiny_encoder_dir: Path):
    from rlhf.registry import ModelRegistry

    work = tmp_path_factory.mktemp("annotation")
    home = work / "home"
    ModelRegistry(home).add(tiny_lm_dir, name="tiny")
    ModelRegistry(home).add(tiny_encoder_dir, name="tiny-enc")
    db = work / "studio.duckdb"
    proc, url = start_studio(db, home, work / "studio.log")
    yield {"url": url, "proc": proc, "db": db, "work": work}
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


def _toast(page) -> str:
    page.wait_for_selector(".toast-body", timeout=15_000)
    return page.inner_text(".toast-body")


def _status(page, elem: str, text: str, timeout: int = 30_000) -> None:
    page.wait_for_function(
        "([id, text]) => (document.querySelector('#' + id) || {}).innerText?.includes(text)", arg=[elem, text], timeout=timeout
    )


def test_admin_annotator_loop(browser, annotation_studio, screenshot_dir: Path) -> None:
    url, work = annotation_studio["url"], annotation_studio["work"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    shot = lambda name: page.screenshot(path=str(screenshot_dir / f"{name}.png"), full_page=True)  # noqa: E731

    # -- admin: project, import (a bad file first), candidates, an annotator ------------------------
    login(page, url, "admin", ADMIN_PASSWORD)
    page.get_by_role("tab", name="Admin").click()
    page.get_by_role("tab", name="Projects").click()
    page.fill("#new-project-name textarea", "demo")  # first and empty: annotators must not land here
    page.fill("#new-project-k input", "2")
    page.click("#create-project")
    _status(page, "project-status", "Created project demo")
    page.fill("#new-project-name textarea", "triage")
    page.fill("#new-project-k input", "3")
    page.fill("#new-project-min input", "1")
    page.fill("#new-project-guidelines textarea", "Prefer **correct** and kind answers.")
    page.click("#create-project")
    _status(page, "project-status", "Created project triage")
    shot("admin_projects")

    page.get_by_role("tab", name="Import").click()
    pick(page, "import-project", "triage")
    bad = work / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": 42}\n')
    page.set_input_files("#import-file input[type=file]", str(bad))
    page.wait_for_timeout(1000)
    page.click("#import-button")
    _status(page, "import-status", "bad.jsonl line 2: field 'prompt' must be text")
    assert "nothing was written" in page.inner_text("#import-status")
    shot("admin_import_error")
    page.click("#import-file button[aria-label='Clear']")
    good = work / "prompts.jsonl"
    good.write_text("\n".join(json.dumps(p) for p in PROMPTS))
    page.set_input_files("#import-file input[type=file]", str(good))
    page.wait_for_timeout(1000)
    page.click("#import-button")
    _status(page, "import-status", "Imported 4 prompts")
    shot("admin_import")

    page.get_by_role("tab", name="Candidates").click()
    pick(page, "gen-project", "triage")
    page.click("#gen-models .remove-all")
    pick(page, "gen-models", "tiny")
    page.keyboard.press("Escape")
    page.click("#gen-start")
    _status(page, "gen-progress", "12 of 12 replies, finished", timeout=120_000)
    shot("admin_candidates")

    page.get_by_role("tab", name="Annotators").click()
    page.fill("#person-name textarea", "ana")
    page.fill("#person-password input", "ana-password-1")
    page.click("#person-add")
    _status(page, "people-status", "Added annotator ana")
    shot("admin_annotators")
    page.get_by_role("tab", name="Dashboard").click()
    page.click("#dash-refresh")
    page.wait_for_timeout(1500)
    shot("admin_dashboard")

    # -- annotator: lands on the project with work, mouse, keyboard, an incomplete ranking, a reload,
    # a skip, undo ------------------------------------------------------------------------------------
    page.goto(url + "/logout")
    login(page, url, "ana", "ana-password-1")
    assert page.get_by_role("tab", name="Admin").count() == 0 or not page.get_by_role("tab", name="Admin").is_visible()
    _status(page, "rank-progress", "0 ranked · 0 skipped · 4 left for you · 0 held by others")
    assert page.input_value("#rank-project input") == "triage"  # not the empty demo project
    assert "<script>" in page.inner_text("#rank-prompt") or "What is" in page.inner_text("#rank-prompt")
    assert page.evaluate("() => !document.querySelector('#rank-prompt script')")  # shown as text, never run
    shot("rank_ranking_mode")

    for card, rank in ((0, "2"), (1, "1"), (2, "3")):  # mouse
        page.click(f"#rank-{card} input[value='{rank}']")
    page.click("#rank-submit")
    _status(page, "rank-status", "Saved.")
    _status(page, "rank-progress", "1 ranked")

    # keyboard: after a submit the first reply has the focus, so digits rank at once
    page.wait_for_function("() => document.activeElement?.closest('#reply-card-0')", timeout=10_000)
    for key in ("1", "3", "2"):
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    _status(page, "rank-progress", "2 ranked")

    # incomplete: a warning, nothing stored, and the screen stays usable (no reload needed)
    page.click("#rank-0 input[value='1']")
    page.click("#rank-submit")
    assert "rank every reply before submitting" in _toast(page)
    page.wait_for_timeout(500)
    assert page.evaluate("() => [...document.querySelectorAll('#rank-work .error')].filter(e => e.offsetParent).length") == 0
    _status(page, "rank-progress", "2 ranked")
    page.click("#rank-1 input[value='2']")
    page.click("#rank-2 input[value='3']")
    page.click("#rank-submit")
    _status(page, "rank-progress", "3 ranked")

    # a reload mid-draft brings the draft back
    page.click("#rank-0 input[value='1']")
    _status(page, "rank-draft", "Draft saved.")
    page.reload()
    _status(page, "rank-progress", "3 ranked")
    page.wait_for_function("() => document.querySelector('#rank-0 input[value=\"1\"]')?.checked", timeout=15_000)
    assert "Draft saved" not in page.inner_text("#rank-draft")
    shot("rank_draft_restored")

    page.fill("#skip-reason textarea", "replies are unreadable")
    page.click("#rank-skip")
    _status(page, "rank-status", "Skipped.")
    _status(page, "rank-progress", "3 ranked · 1 skipped · 0 left for you")
    # nothing left here: the home view lists the projects, the finished one shown as such
    page.wait_for_selector("#rank-home", state="visible", timeout=15_000)
    assert "triage — nothing left for you · you: 3 ranked, 1 skipped" in page.inner_text("#rank-home")
    assert "demo — no prompts yet" in page.inner_text("#rank-home")
    shot("rank_after_skip")

    # undo: the skip comes back as a draft (its ranks kept), then is skipped again
    page.click("#rank-undo")
    _status(page, "rank-status", "Took back your last skip")
    _status(page, "rank-progress", "3 ranked · 0 skipped · 1 left for you")
    page.wait_for_selector("#rank-work", state="visible", timeout=15_000)
    assert page.is_checked("#rank-0 input[value='1']")
    shot("rank_undo")
    page.fill("#skip-reason textarea", "replies are unreadable")
    page.click("#rank-skip")
    _status(page, "rank-progress", "3 ranked · 1 skipped · 0 left for you")

    # -- an annotator who reaches admin endpoints directly is refused on the server --------------
    from gradio_client import Client

    ana = Client(url, auth=("ana", "ana-password-1"), verbose=False)
    with pytest.raises(Exception, match="Only admins|Not allowed"):
        ana.predict("sneaky", 2, 1, "", api_name="/create_project")
    with pytest.raises(Exception, match="Only admins|Not allowed"):
        ana.predict("mallory", "password-123", "admin", api_name="/add_annotator")
    admin = Client(url, auth=("admin", ADMIN_PASSWORD), verbose=False)
    assert "Created project" in admin.predict("duel", 2, 2, "A or B?", api_name="/create_project")

    # -- pairwise mode with the keyboard ----------------------------------------------------------
    pairs = work / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"prompt": f"Say hi {i}", "chosen": f"Hi {i}!", "rejected": f"Bye {i}."}) for i in range(2)))
    from gradio_client import handle_file

    dash = admin.predict("triage", api_name="/dashboard")  # through Gradio's own output processing
    assert "Completion per project" in dash[0] and "4 submitted" not in dash[2] and "ana" in dash[2]
    assert "Imported **2** prompts" in admin.predict("duel", handle_file(str(pairs)), "auto", False, api_name="/import_file")
    # the home view: duel (work) comes first; choosing it from the list gives the keys to the replies
    page.click("#rank-home-button")
    _status(page, "rank-home-list", "duel — 2 left for you")
    home = page.inner_text("#rank-home-list")
    assert home.index("duel —") < home.index("demo — no prompts yet") < home.index("triage — nothing left for you")
    shot("rank_home")
    page.click("#rank-home-list label:has-text('duel')")
    page.wait_for_selector("#pairwise-row", state="visible", timeout=15_000)
    page.wait_for_function("() => document.activeElement?.closest('#reply-card-0')", timeout=10_000)
    shot("rank_pairwise_mode")
    page.keyboard.press("b")
    _status(page, "rank-status", "Saved.")
    # the same from the project list: right after choosing, keys rank (they do not type into the list)
    page.click("#rank-home-button")
    page.wait_for_selector("#rank-home", state="visible", timeout=15_000)
    pick(page, "rank-project", "duel")
    page.wait_for_selector("#pairwise-row", state="visible", timeout=15_000)
    page.wait_for_function("() => document.activeElement?.closest('#reply-card-0')", timeout=10_000)
    page.keyboard.press("x")
    _status(page, "rank-status", "Nothing left to rank")
    assert page.input_value("#rank-project input") == "duel"

    # -- the admin freezes a snapshot from the console --------------------------------------------
    page.goto(url + "/logout")
    login(page, url, "admin", ADMIN_PASSWORD)
    page.get_by_role("tab", name="Admin").click()
    page.get_by_role("tab", name="Snapshots").click()
    pick(page, "snap-project", "triage")
    page.click("#snap-create")
    _status(page, "snap-manifest", "snap-")
    assert '"pair_strategy"' in page.inner_text("#snap-manifest") or "pair_strategy" in page.inner_text("#snap-manifest")
    shot("admin_snapshots")

    # -- a reward model trained on that snapshot from its tab, then tried -------------------------
    page.get_by_role("tab", name="Reward model").click()
    page.click("#reward-data input")
    page.locator("#reward-data li[role=option]").first.click()
    pick(page, "reward-base", "tiny-enc")
    page.fill("#cfg-RewardRunConfig-epochs input", "3")
    page.fill("#cfg-RewardRunConfig-register_as textarea", "browser-rm")
    page.locator("#cfg-RewardRunConfig-register_as textarea").press("Tab")
    page.get_by_text("Config file and command").click()
    _status(page, "reward-command", "rlhf-studio train reward --config run.yaml")
    page.click("#reward-launch")
    _status(page, "reward-summary", "finished", timeout=180_000)
    _status(page, "reward-runs", "browser-rm", timeout=30_000)
    assert "<svg" in page.inner_html("#reward-plots")
    shot("reward_run_finished")
    page.click("#try-model input")
    page.click('#try-model li[role=option][aria-label="browser-rm"]')
    page.fill("#try-prompt textarea", "Name three primary colours.")
    page.fill("#try-a textarea", "Red, yellow and blue.")
    page.fill("#try-b textarea", "I like turtles.")
    page.click("#try-score")
    _status(page, "try-verdict", "P(A preferred)")
    assert "browser-rm prefers reply" in page.inner_text("#try-verdict") or "scores them equal" in page.inner_text("#try-verdict")
    shot("reward_try_it")

    # -- PPO against that reward model (text level: a different tokenizer is fine), then chat ------
    page.get_by_role("tab", name="PPO").click()
    pick(page, "ppo-policy", "tiny")
    page.click("#ppo-prompts input")
    page.click('#ppo-prompts li[role=option]:has-text("project triage")')
    page.click("#ppo-rm input")
    page.click('#ppo-rm li[role=option][aria-label="browser-rm"]')
    for field, value in (("steps", "2"), ("batch_size", "4"), ("max_new_tokens", "8")):
        page.fill(f"#cfg-PPORunConfig-{field} input", value)
    page.get_by_text("More settings").last.click()
    page.fill("#cfg-PPORunConfig-minibatch_size input", "2")
    page.fill("#cfg-PPORunConfig-register_as textarea", "browser-ppo")
    page.locator("#cfg-PPORunConfig-register_as textarea").press("Tab")
    page.click("#ppo-launch")
    _status(page, "ppo-summary", "finished", timeout=180_000)
    _status(page, "ppo-runs", "browser-ppo", timeout=30_000)
    assert page.inner_html("#ppo-plots").count("<svg") == 6
    _status(page, "ppo-samples", "What is 2 + 2?")
    shot("ppo_run_finished")
    page.get_by_role("tab", name="Chat").click()
    page.click("#chat-model input")
    page.click('#chat-model li[role=option][aria-label="browser-ppo"]')
    box = page.locator("#chat-input textarea")
    box.fill("Say something about the sea.")
    box.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('.bot').length > 0", timeout=60_000)
    # no screenshot here: while the tiny policy streams its reply, a full-page screenshot stalled CI
    page.close()

    # -- the store, once the studio has let go of the file -----------------------------------------
    proc = annotation_studio["proc"]
    proc.terminate()
    proc.wait(timeout=30)
    from annotations.store import Store

    with Store(annotation_studio["db"]) as store:
        rows = store.query(
            "SELECT p.text, r.status, r.ranks, r.skip_reason, r.both_bad FROM rankings r JOIN annotators a ON a.id = r.annotator_id "
            "JOIN prompts p ON p.id = r.prompt_id WHERE a.name = 'ana' ORDER BY r.id"
        )
        replies = {pid: [r.id for r in store.replies(pid)] for (pid,) in store.query("SELECT id FROM prompts")}
        texts = {t: pid for pid, t in store.query("SELECT id, text FROM prompts")}
    by_status = [r[1] for r in rows]
    assert by_status.count("submitted") == 5 and by_status.count("skipped") == 1 and len(rows) == 6
    mouse, keyboard, fixed = rows[0], rows[1], rows[2]
    ids = replies[texts[mouse[0]]]
    assert json.loads(mouse[2]) == {str(ids[0]): 2, str(ids[1]): 1, str(ids[2]): 3}
    ids = replies[texts[keyboard[0]]]
    assert json.loads(keyboard[2]) == {str(ids[0]): 1, str(ids[1]): 3, str(ids[2]): 2}
    ids = replies[texts[fixed[0]]]
    assert json.loads(fixed[2]) == {str(ids[0]): 1, str(ids[1]): 2, str(ids[2]): 3}  # the refused one, completed
    skipped = next(r for r in rows if r[1] == "skipped")
    assert skipped[3] == "replies are unreadable"
    duel = [r for r in rows if r[0].startswith("Say hi")]
    b_better = json.loads(duel[0][2])
    assert sorted(b_better.values()) == [1, 2] and b_better[min(b_better, key=int)] == 2  # B (second reply) ranked first
    assert duel[1][4] is True and sorted(json.loads(duel[1][2]).values()) == [1, 1]  # both bad: a flagged tie
