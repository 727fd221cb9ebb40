"""The studio: every screen as a tab of one Gradio app.

    python launch.py --port 7860 --db studio.duckdb
    rlhf-studio serve --port 7860

Binds to 127.0.0.1 by default; a public share link is made only with ``--share``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from studio import chat
from studio.context import StudioContext

TITLE = "RLHF Studio"
CSS = """
#studio-header h1 { margin-bottom: 0; }
#studio-header p { color: var(--body-text-color-subdued); margin-top: 2px; }
"""


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="slate")


def build_app(ctx: StudioContext) -> gr.Blocks:
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(
            f"# {TITLE}\nPrompt, instruction-tune and align your own model on your own machine · database `{ctx.store.path}`",
            elem_id="studio-header",
        )
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                chat.build(ctx)  # a Blocks built inside a Blocks renders in place
    return app


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--db", default=None, help="DuckDB file (default: $STUDIO_DB or ./studio.duckdb)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")


def db_path(arg: str | None) -> Path:
    import os

    return Path(arg or os.environ.get("STUDIO_DB") or "studio.duckdb")


def launch(blocks: gr.Blocks, host: str, port: int, share: bool) -> None:
    blocks.queue(default_concurrency_limit=4).launch(
        server_name=host, server_port=port, share=share, theme=theme(), css=CSS, footer_links=["api", "settings"]
    )


def serve(args: argparse.Namespace) -> int:
    """Open the store (this process becomes its single writer) and serve until stopped."""
    ctx = StudioContext.open(db_path(args.db))
    try:
        launch(build_app(ctx), args.host, args.port, args.share)
    finally:
        ctx.close()
    return 0


def standalone(build: Callable[[StudioContext], gr.Blocks]) -> None:
    """Run one screen on its own (``python -m studio.<screen>``)."""
    parser = argparse.ArgumentParser(description="Run one RLHF Studio screen on its own.")
    add_server_arguments(parser)
    args = parser.parse_args()
    ctx = StudioContext.open(db_path(args.db))
    try:
        launch(build(ctx), args.host, args.port, args.share)
    finally:
        ctx.close()
