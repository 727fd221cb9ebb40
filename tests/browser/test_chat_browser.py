"""The demo chat in Chromium against a real studio running SmolLM2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import ADMIN_PASSWORD, login

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_chat_answers_the_capital_of_france(browser, studio: str, screenshot_dir: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    login(page, studio, "admin", ADMIN_PASSWORD)
    box = page.locator("#chat-input textarea")
    box.fill("What is the capital of France?")
    box.press("Enter")
    bot = page.locator(".message-row .bot").last
    bot.wait_for(timeout=60_000)
    page.wait_for_function("() => [...document.querySelectorAll('.bot')].some(e => e.innerText.includes('Paris'))", timeout=60_000)
    page.screenshot(path=str(screenshot_dir / "chat.png"))
    assert "Paris" in bot.inner_text()
    assert box.input_value() == ""  # the box was cleared for the next message

    # Regenerate answers the same question again (greedy: the same answer), Clear empties it.
    page.click("#chat-regenerate")
    page.wait_for_function(
        "() => document.querySelectorAll('.bot').length === 1 && document.querySelector('.bot').innerText.includes('Paris')",
        timeout=60_000,
    )
    page.click("#chat-clear")
    page.wait_for_function("() => document.querySelectorAll('.bot').length === 0", timeout=10_000)
    page.close()
