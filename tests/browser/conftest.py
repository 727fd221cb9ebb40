"""A real studio process on a free port, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ADMIN_PASSWORD = "admin-test-password"


def start_studio(db: Path, home: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "STUDIO_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "STUDIO_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "--port", str(port), "--db", str(db)],
        cwd=db.parent,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the studio exited with {proc.returncode}:\n{log.read_text()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"the studio did not start within 120 s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    folder = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (bash dev.sh test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def studio(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path, session_home: Path) -> Iterator[str]:
    """A studio on the real SmolLM2 with a fresh database; yields its URL."""
    work = tmp_path_factory.mktemp("studio")
    proc, url = start_studio(work / "studio.duckdb", session_home, work / "studio.log")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def login(page, url: str, user: str, password: str) -> None:
    """Log in through Gradio's login form and wait for the studio to load."""
    page.goto(url)
    page.fill("input[type=text]", user)
    page.fill("input[type=password]", password)
    page.keyboard.press("Enter")
    page.wait_for_function("(name) => (document.querySelector('#studio-user') || {}).innerText?.includes(name)", arg=user, timeout=30_000)


def pick(page, elem_id: str, option: str) -> None:
    """Choose an option of a Gradio dropdown."""
    page.click(f"#{elem_id} input")
    page.click(f'#{elem_id} li[role=option][aria-label="{option}"]')
