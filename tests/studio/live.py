"""A real studio served in-process, and a raw HTTP client that calls any event by its index.

``gradio_client`` refuses endpoints marked private (``api_name=False``), but a browser (or a
hostile script) can call every event of the page with ``/gradio_api/queue/join`` and its
fn_index; :class:`RawClient` does exactly that, so the tests see what an attacker sees.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import gradio as gr
import httpx

from studio.app import build_app, launch
from studio.context import StudioContext


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    url: str
    blocks: gr.Blocks


@contextmanager
def serve(ctx: StudioContext) -> Iterator[Served]:
    blocks = build_app(ctx)
    url = launch(ctx, blocks, "127.0.0.1", free_port(), False, block=False)
    try:
        yield Served(url.rstrip("/"), blocks)
    finally:
        blocks.close()


class LoginRefused(Exception):
    pass


class RawClient:
    """One logged-in browser session, speaking Gradio's queue protocol directly."""

    def __init__(self, url: str, user: str | None = None, password: str | None = None) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)
        self.session = uuid.uuid4().hex
        if user is not None:
            reply = self.http.post("/login", data={"username": user, "password": password or ""})
            if reply.status_code != 200:
                raise LoginRefused(reply.text)

    def close(self) -> None:
        self.http.close()

    def config(self) -> dict:
        return self.http.get("/config").json()

    def call(self, fn_index: int, data: list) -> dict:
        """Run one event; returns the completion message ({"success": bool, "output": {...}})
        or {"status": code} when the server refuses the request itself (not logged in)."""
        body = {"data": data, "fn_index": fn_index, "session_hash": self.session, "event_data": None, "trigger_id": None}
        joined = self.http.post("/gradio_api/queue/join", json=body)
        if joined.status_code != 200:
            return {"status": joined.status_code, "detail": joined.text}
        event_id = joined.json()["event_id"]
        with self.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": self.session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") == event_id and msg.get("msg") == "process_completed":
                    return msg
        raise AssertionError(f"event {fn_index} never completed")


def error_of(result: dict) -> str:
    """The error text of a completed event ('' when it succeeded)."""
    if "status" in result:
        return f"HTTP {result['status']}"
    output = result.get("output") or {}
    return "" if result.get("success") else str(output.get("error") or "error")
