"""L1 and L2 in Chromium: the prompt lab (variants, a saved template, the queue) and an SFT run from its tab.

A real studio with a tiny model and a tiny encoder; the store is seeded before it starts (the
studio then owns the file).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import ADMIN_PASSWORD, login, pick, start_studio

pytestmark = pytest.mark.browser


def _status(page, elem: str, text: str, timeout: int = 30_000) -> None:
    page.wait_for_function(
        "([id, text]) => (document.querySelector('#' + id) || {}).innerText?.includes(text)", arg=[elem, text], timeout=timeout
    )


@pytest.fixture(scope="module")
def tiers_studio(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path, tiny_encoder_dir: Path):
    from annotations.accounts import add_annotator
    from annotations.queue import next_prompt, submit_ranking
    from annotations.store import PromptRecord, ReplyRecord, Store
    from rlhf.registry import ModelRegistry

    work = tmp_path_factory.mktemp("tiers")
    home = work / "home"
    ModelRegistry(home).add(tiny_lm_dir, name="tiny")
    ModelRegistry(home).add(tiny_encoder_dir, name="minilm-tiny")
    db = work / "studio.duckdb"
    with Store(db) as store:
        pid = store.create_project("faq", k=2)
        for i, prompt_id in enumerate(store.add_prompts(pid, [PromptRecord(f"Where is the sea number {i}?") for i in range(8)])):
            store.add_replies(prompt_id, [ReplyRecord("The sea is wide."), ReplyRecord(f"def add(a, b) {i}")])
        ana = add_annotator(store, "ana", "ana-password")
        while (item := next_prompt(store, pid, ana)) is not None:
            submit_ranking(store, ana, item.prompt.id, {r.id: (1 if r.text.startswith("The sea") else 2) for r in item.replies})
    proc, url = start_studio(db, home, work / "studio.log")
    yield {"url": url, "proc": proc}
    proc.terminate()
    proc.wait(timeout=30)


def test_prompt_lab_and_instruction_tuning(browser, tiers_studio, screenshot_dir: Path) -> None:
    url = tiers_studio["url"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    shot = lambda name: page.screenshot(path=str(screenshot_dir / f"{name}.png"), full_page=True)  # noqa: E731
    login(page, url, "admin", ADMIN_PASSWORD)

    # -- L1: a few-shot template over the project's ranked replies, two variants, saved, sent to the queue
    page.get_by_role("tab", name="Prompt lab").click()
    page.fill("#lab-system textarea", "Answer in one short sentence.")
    page.fill("#lab-template textarea", "Question: {input}")
    page.click("#lab-pool input")
    page.click('#lab-pool li[role=option]:has-text("project faq")')
    _status(page, "lab-pool-table", "The sea is wide.")
    page.locator("#lab-demos").get_by_role("radio", name="random").check()
    page.fill("#lab-k input", "2")
    page.fill("#lab-input textarea", "Where is the big sea?")
    pick(page, "lab-v0-model", "tiny")
    page.click("#lab-v1-template input")
    page.click("#lab-v1-template li[role=option]:first-child")
    pick(page, "lab-v1-model", "tiny")
    page.click("#lab-run")
    _status(page, "lab-out-1", "tiny")
    page.get_by_text("The exact prompt of each variant").click()
    _status(page, "lab-prompts", "The sea is wide.")  # a demonstration from the pool is in the prompt
    assert "Answer in one short sentence." in page.inner_text("#lab-prompts")
    page.click("#lab-name input")
    page.fill("#lab-name input", "faq-two-shot")
    page.keyboard.press("Enter")
    page.click("#lab-save")
    _status(page, "lab-save-note", "Saved")
    pick(page, "lab-queue-project", "faq")
    page.click("#lab-queue-send")
    _status(page, "lab-queue-note", "Sent to faq with 2 candidate replies")
    shot("prompt_lab")

    # -- L2: instruction tuning from the project's best-ranked replies ------------------------------
    page.get_by_role("tab", name="Instruction tuning").click()
    page.click("#sft-data input")
    page.click('#sft-data li[role=option]:has-text("project faq")')
    pick(page, "sft-model", "tiny")
    page.fill("#cfg-SFTRunConfig-learning_rate input", "0.005")
    page.fill("#cfg-SFTRunConfig-max_length input", "64")
    page.fill("#cfg-SFTRunConfig-register_as textarea", "browser-sft")
    page.locator("#cfg-SFTRunConfig-register_as textarea").press("Tab")
    page.click("#sft-launch")
    _status(page, "sft-summary", "finished", timeout=180_000)
    _status(page, "sft-runs", "browser-sft", timeout=30_000)
    assert "eval_loss" in page.inner_text("#sft-summary")
    shot("sft_run_finished")
    page.get_by_role("tab", name="Chat").click()
    page.click("#chat-model input")
    page.click('#chat-model li[role=option][aria-label="browser-sft"]')
    page.close()
