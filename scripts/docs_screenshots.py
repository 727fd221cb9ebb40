"""Regenerate the README's screenshots (docs/*.png) from a real studio on SmolLM2.

    .venv/bin/python scripts/docs_screenshots.py

Starts a studio on a fresh database with the demo project, has the admin generate candidate
replies with SmolLM2, adds an annotator who ranks a few prompts, and photographs each screen.
Takes a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser.conftest import ADMIN_PASSWORD, CHROMIUM, CHROMIUM_ARGS, login, start_studio  # noqa: E402


def main() -> None:
    from playwright.sync_api import sync_playwright

    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        db = tmp / "studio.duckdb"
        env_home = Path.home() / ".cache" / "rlhf-studio"
        env = {**os.environ, "STUDIO_ADMIN_PASSWORD": ADMIN_PASSWORD, "STUDIO_HOME": str(env_home)}
        subprocess.run([sys.executable, "-m", "studio.cli", "init", "--db", str(db)], check=True, cwd=ROOT, env=env)
        proc, url = start_studio(db, env_home, tmp / "studio.log")
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 950})
                page.goto(url)
                page.screenshot(path=str(docs / "login.png"))
                login(page, url, "admin", ADMIN_PASSWORD)
                box = page.locator("#chat-input textarea")
                box.fill("What is the capital of France?")
                box.press("Enter")
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.bot')].some(e => e.innerText.includes('Paris'))", timeout=120_000
                )
                page.screenshot(path=str(docs / "chat.png"))
                page.get_by_role("tab", name="Admin").click()
                page.get_by_role("tab", name="Candidates").click()
                page.wait_for_timeout(1500)  # demo is the first project, already chosen
                page.click("#gen-start")
                page.wait_for_function(
                    "() => (document.querySelector('#job-summary') || {}).innerText?.includes('finished')", timeout=600_000
                )
                page.screenshot(path=str(docs / "admin_candidates.png"))
                page.get_by_role("tab", name="Annotators").click()
                page.fill("#person-name textarea", "ana")
                page.fill("#person-password input", "ana-password-1")
                page.click("#person-add")
                page.wait_for_timeout(1500)
                page.goto(url + "/logout")
                login(page, url, "ana", "ana-password-1")
                page.wait_for_selector("#pairwise-row", state="visible", timeout=30_000)
                page.screenshot(path=str(docs / "rank_pairwise.png"), full_page=True)
                for key in "abtab":
                    page.keyboard.press(key)
                    page.wait_for_timeout(1200)
                page.goto(url + "/logout")
                login(page, url, "admin", ADMIN_PASSWORD)
                page.get_by_role("tab", name="Admin").click()
                page.click("#dash-refresh")
                page.wait_for_timeout(2000)
                page.screenshot(path=str(docs / "admin_dashboard.png"), full_page=True)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
