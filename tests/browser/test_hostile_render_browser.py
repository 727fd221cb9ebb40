"""Hostile stored text in a real browser: nothing loads, links, navigates, pops up or runs.

The database is seeded before the studio starts: a project whose guidelines, prompts (plain and
multi-turn) and replies are the strings of tests/hostile.py, plus an annotator. The annotator
logs in to Chromium, opens the guidelines, ranks every prompt and types a hostile chat message,
while the test records every request, navigation, dialog and popup. No model is needed: the
replies are in the store.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import login, start_studio
from tests.hostile import ALLOWED_TAGS, HOSTILE, WRAPPER_CLASSES

pytestmark = pytest.mark.browser

K = 4
TEXTS = [text for _, text in HOSTILE]
# Each prompt is a conversation of four turns (system, user, assistant, user) with K replies:
# 8 strings a screen, so a few screens show the whole corpus.
PER_PROMPT = 4 + K
N_PROMPTS = -(-len(TEXTS) // PER_PROMPT)
# The guidelines hold every string; an unclosed fence turns the rest into code, so it goes last.
GUIDELINES = "\n\n".join(sorted(TEXTS, key=lambda t: t.startswith("```")))

# Where rendered stored text lives on the Rank tab.
CONTAINERS = "#rank-guidelines, #rank-prompt, [id^='reply-text-']"
# Elements that can load, link, submit or embed: none may exist anywhere in those containers
# (inside or outside the rendered text, e.g. put there by a client-side Markdown renderer).
FORBIDDEN = "img, a, iframe, frame, object, embed, form, input[formaction], video, audio, source, picture, link, meta, base, style, script"


@pytest.fixture(scope="module")
def hostile_studio(tmp_path_factory: pytest.TempPathFactory):
    from annotations.accounts import add_annotator
    from annotations.store import PromptRecord, ReplyRecord, Store

    work = tmp_path_factory.mktemp("hostile")
    db = work / "studio.duckdb"
    with Store(db) as store:
        pid = store.create_project("hostile", guidelines=GUIDELINES, k=K, min_submitted=1)
        for n in range(N_PROMPTS):
            mine = [TEXTS[(n * PER_PROMPT + j) % len(TEXTS)] for j in range(PER_PROMPT)]
            turns = [{"role": role, "content": text} for role, text in zip(("system", "user", "assistant", "user"), mine, strict=False)]
            [prompt_id] = store.add_prompts(pid, [PromptRecord(text=mine[3], messages=turns)])
            store.add_replies(prompt_id, [ReplyRecord(r, model="seeded") for r in mine[4:]])
        add_annotator(store, "ana", "ana-password-1")
    proc, url = start_studio(db, work / "home", work / "studio.log")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _inside_containers(page) -> tuple[list, list, int]:
    """(elements inside rendered text as [tag, attribute names], forbidden elements, wrappers)."""
    inside = page.eval_on_selector_all(
        ", ".join(f"{c.strip()} .md-text *" for c in CONTAINERS.split(",")),
        "els => els.map(e => [e.tagName.toLowerCase(), e.getAttributeNames()])",
    )
    forbidden = page.eval_on_selector_all(
        ", ".join(f"{c.strip()} :is({FORBIDDEN})" for c in CONTAINERS.split(",")), "els => els.map(e => e.outerHTML.slice(0, 200))"
    )
    wrappers = page.eval_on_selector_all(
        ", ".join(f"{c.strip()} .md-text" for c in CONTAINERS.split(",")),
        "els => els.map(e => [e.className, e.getAttributeNames().sort().join(' ')])",
    )
    for cls, names in wrappers:
        assert cls in WRAPPER_CLASSES and names == "class dir", (cls, names)
    return inside, forbidden, len(wrappers)


def test_hostile_text_stays_text_in_chromium(browser, hostile_studio: str, screenshot_dir: Path) -> None:
    url = hostile_studio
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    requests, navigations, dialogs, popups = [], [], [], []
    context.on("request", lambda r: requests.append(r.url))
    context.on("page", lambda p: popups.append(p.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("framenavigated", lambda f: navigations.append(f.url))

    login(page, url, "ana", "ana-password-1")
    page.wait_for_function("() => (document.querySelector('#rank-progress') || {}).innerText?.includes('0 ranked')", timeout=30_000)
    page.get_by_text("Guidelines", exact=True).first.click()
    page.wait_for_function("() => document.querySelector('#rank-guidelines .md-text')", timeout=10_000)
    page.wait_for_function("() => document.querySelector('#reply-text-0 .md-text')", timeout=10_000)

    assert "`<img src=https://evil.invalid/beacon.png>`" in page.inner_text("#rank-guidelines")
    seen_prompts, shown = set(), []
    for n in range(N_PROMPTS):
        page.wait_for_function(
            "(n) => (document.querySelector('#rank-progress') || {}).innerText?.includes(n + ' ranked')", arg=n, timeout=15_000
        )
        inside, forbidden, wrappers = _inside_containers(page)
        assert forbidden == [], forbidden
        assert wrappers >= 1 + 1 + K, f"rendered text missing on prompt {n}: {wrappers} .md-text wrappers"
        bad = [(tag, attrs) for tag, attrs in inside if tag not in ALLOWED_TAGS or attrs]
        assert bad == [], bad
        seen_prompts.add(page.inner_text("#rank-prompt"))
        shown.append(page.inner_text("#ranking-screen"))
        if n == 0:
            page.screenshot(path=str(screenshot_dir / "rank_hostile_text.png"), full_page=True)
        for card, rank in zip(range(K), ("2", "1", "4", "3"), strict=True):
            page.click(f"#rank-{card} input[value='{rank}']")
        page.click("#rank-submit")
    page.wait_for_function(
        "(n) => (document.querySelector('#rank-progress') || {}).innerText?.includes(n + ' ranked')", arg=N_PROMPTS, timeout=15_000
    )
    assert len(seen_prompts) == N_PROMPTS

    # Visible text: markup shows as itself, links and images as their URL, bidi controls as markers.
    text = "\n".join(shown)
    assert "<img src=https://evil.invalid/beacon.png>" in text
    assert "the bank (https://evil.invalid/phish?u=1&v=2)" in text
    assert "[image] (https://evil.invalid/pixel.png)" in text
    assert '<iframe src="https://evil.invalid/frame"></iframe>' in text
    assert "[U+202E]" in text and "\u202e" not in text

    # The chat shows the annotator's own message rendered on the server too (no model is
    # registered here, so only the user's turn appears, with a toast saying so).
    page.get_by_role("tab", name="Chat").click()
    box = page.locator("#chat-input textarea")
    box.fill("Look: ![x](https://evil.invalid/chat.png) <img src=https://evil.invalid/chat2.png> [bank](https://evil.invalid/c)")
    box.press("Enter")
    page.wait_for_function("() => [...document.querySelectorAll('.user')].some(e => e.innerText.includes('[image: x]'))", timeout=15_000)
    bubble = page.locator(".message-row .user").last
    assert "<img src=https://evil.invalid/chat2.png>" in bubble.inner_text() and "bank (https://evil.invalid/c)" in bubble.inner_text()
    describe = "els => els.map(e => [e.tagName.toLowerCase(), e.getAttributeNames()])"
    chat_elements = page.eval_on_selector_all(".message-row .md-text *", describe)
    assert chat_elements and [(tag, attrs) for tag, attrs in chat_elements if tag not in ALLOWED_TAGS or attrs] == []
    page.screenshot(path=str(screenshot_dir / "chat_hostile_text.png"))
    page.click("#chat-stop")  # no need for the built-in model to load
    assert page.eval_on_selector_all(f".message-row :is({FORBIDDEN})", "els => els.length") == 0

    page.wait_for_timeout(500)
    foreign = [u for u in requests if not u.startswith(origin + "/") and u != origin]
    # data: URLs the studio's own CSS uses (icons) are requests too; none may carry our payloads.
    assert [u for u in foreign if not u.startswith("data:")] == [], foreign
    assert not [u for u in foreign if "evil" in u or "PHN" in u], foreign
    assert all(u.startswith(origin) or u == "about:blank" for u in navigations), navigations
    assert dialogs == [] and popups == [], (dialogs, popups)
    assert page.evaluate("() => [...document.querySelectorAll('body iframe, body base, meta[http-equiv]')].map(e => e.outerHTML)") == []
    assert page.evaluate("() => document.baseURI").startswith(origin)
    context.close()
