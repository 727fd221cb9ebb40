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

from studio import admin, arena, chat, dpo_tab, evaluate_tab, kto_tab, online_tab, ppo_tab, prompt_lab, ranking, reward_tab, sft_tab
from studio.auth import ensure_admin
from studio.context import StudioContext
from studio.login_guard import ClientAddressMiddleware
from studio.permissions import current_user
from studio.render import plain_text

TITLE = "RLHF Studio"
CSS = """
#studio-header h1 { margin-bottom: 0; }
#studio-header p { color: var(--body-text-color-subdued); margin-top: 2px; }
#studio-user { text-align: right; }
.reply-card { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 10px; }
.reply-card:focus, .reply-card:focus-within { outline: 3px solid var(--color-accent); outline-offset: 2px; }
#rank-prompt-box, #rank-prompt { border-width: 1px !important; border-color: var(--border-color-primary) !important; }
.hint { color: var(--body-text-color-subdued); font-size: 0.9em; }
.bar-chart { padding: 8px 4px; }
.bar-title { font-weight: 600; margin-bottom: 6px; }
.bar-row { display: grid; grid-template-columns: 160px 1fr 150px; gap: 8px; align-items: center; margin: 3px 0; }
.bar-label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.bar-track { background: var(--neutral-200); border-radius: 5px; height: 12px; overflow: hidden; }
.bar-fill { display: block; background: var(--color-accent); height: 12px; border-radius: 5px; }
.bar-text { color: var(--body-text-color-subdued); font-size: 0.9em; }
.bar-empty { color: var(--body-text-color-subdued); }
.line-chart { padding: 6px 2px; }
.run-plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 4px 16px; }
.chart-legend { font-size: 0.85em; margin-top: 2px; }
.md-text { unicode-bidi: isolate; overflow-wrap: anywhere; }
.md-text h1 { font-size: 1.4em; } .md-text h2 { font-size: 1.25em; } .md-text h3 { font-size: 1.1em; }
.md-text h1, .md-text h2, .md-text h3, .md-text h4, .md-text h5, .md-text h6 { margin: 0.6em 0 0.3em; }
.md-text code { font-family: var(--font-mono); font-size: 0.9em; background: var(--background-fill-secondary); }
.md-text code { padding: 0 0.25em; border-radius: 4px; }
.md-text pre { background: var(--background-fill-secondary); border: 1px solid var(--border-color-primary); border-radius: 6px; }
.md-text pre { padding: 8px 10px; overflow-x: auto; margin: 0 0 0.6em; }
.md-text pre code { background: none; padding: 0; white-space: pre; }
.md-text blockquote { margin: 0.4em 0 !important; color: var(--body-text-color-subdued); }
.md-text hr { margin: 1em 0; }
.md-text th, .md-text td { border: 1px solid var(--border-color-primary); }
.md-turn + .md-turn { margin-top: 0.7em; }
.md-role { font-size: 0.8em; font-weight: 600; text-transform: uppercase; letter-spacing: 0.04em; color: var(--body-text-color-subdued); }
.md-turn > .md-text { border-left: 3px solid var(--border-color-primary); padding-left: 0.7em; }
.eval-warning { color: var(--color-red-600, #b91c1c); font-weight: 600; }
.eval-prompt { border-top: 1px solid var(--border-color-primary); padding: 8px 0; }
.eval-replies { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 10px; margin-top: 6px; }
.eval-reply { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 6px 10px; }
.eval-chart { padding: 6px 2px; }
"""


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="slate")


def whoami(ctx: StudioContext, request: gr.Request | None) -> tuple[str, bool]:
    """(header text, is admin) for the logged-in user."""
    user = current_user(ctx.store, request)
    text = f"Logged in as **{user.name}** ({user.role}) · [Log out](/logout)"
    if user.is_admin:  # server paths are for admins only
        text += f"<br>database `{plain_text(ctx.store.path)}`"
    return text, user.is_admin


def build_app(ctx: StudioContext) -> gr.Blocks:
    with gr.Blocks(title=TITLE) as app:
        with gr.Row():
            gr.Markdown(
                f"# {TITLE}\nPrompt, instruction-tune and align your own model on your own machine",
                elem_id="studio-header",
            )
            user_md = gr.Markdown(elem_id="studio-user")
        # Each screen is a Blocks built inside this one, so it renders in place.
        with gr.Tabs() as tabs:
            with gr.Tab("Chat", id="chat"):
                chat.build(ctx)
            with gr.Tab("Prompt lab", id="lab", visible=False) as lab_tab:
                prompt_lab.build(ctx)
            with gr.Tab("Rank", id="rank"):
                ranking.build(ctx)
            with gr.Tab("Arena", id="arena"):
                arena.build(ctx)
            with gr.Tab("Instruction tuning", id="sft", visible=False) as sft_tab_:
                sft_tab.build(ctx)
            with gr.Tab("Reward model", id="reward", visible=False) as reward_tab_:
                reward_tab.build(ctx)
            with gr.Tab("PPO", id="ppo", visible=False) as ppo_tab_:
                ppo_tab.build(ctx)
            with gr.Tab("GRPO / RLOO", id="online", visible=False) as online_tab_:
                online_tab.build(ctx)
            with gr.Tab("DPO", id="dpo", visible=False) as dpo_tab_:
                dpo_tab.build(ctx)
            with gr.Tab("KTO", id="kto", visible=False) as kto_tab_:
                kto_tab.build(ctx)
            with gr.Tab("Evaluate", id="evaluate", visible=False) as evaluate_tab_:
                evaluate_tab.build(ctx)
            with gr.Tab("Admin", id="admin", visible=False) as admin_tab:
                admin.build(ctx)

        engineer = [lab_tab, sft_tab_, reward_tab_, ppo_tab_, online_tab_, dpo_tab_, kto_tab_, evaluate_tab_, admin_tab]

        def on_load(request: gr.Request):
            text, is_admin = whoami(ctx, request)
            # Annotators land on the ranking screen; the prompt lab, training and admin tabs
            # are shown to admins only (and their handlers check the role again on the server).
            engineer_tabs = [gr.Tab(visible=is_admin) for _ in engineer]
            return text, *engineer_tabs, gr.Tabs(selected="chat" if is_admin else "rank")

        app.load(on_load, None, [user_md, *engineer, tabs], api_name=False)
    return app


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--db", default=None, help="DuckDB file (default: $STUDIO_DB or ./studio.duckdb)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for generation in the studio (default: $STUDIO_THREADS, else the cores free at start-up)",
    )


def db_path(arg: str | None) -> Path:
    import os

    return Path(arg or os.environ.get("STUDIO_DB") or "studio.duckdb")


def launch(ctx: StudioContext, blocks: gr.Blocks, host: str, port: int, share: bool, block: bool = True) -> str:
    """Serve ``blocks`` with the studio's logins; returns the local URL (at once when ``block`` is False)."""
    from starlette.middleware import Middleware

    ensure_admin(ctx.store)
    # Deactivating an account or resetting its password ends its sessions in this server.
    ctx.sessions.attach(blocks)
    _, url, _ = blocks.queue(default_concurrency_limit=8).launch(
        server_name=host,
        server_port=port,
        share=share,
        # Async: the password check runs in a worker thread, never on the event loop; the
        # middleware tells it the client's address for the per-address lockout.
        auth=ctx.logins.auth_function(),
        app_kwargs={"middleware": [Middleware(ClientAddressMiddleware)]},
        auth_message="Log in with your RLHF Studio account.",
        theme=theme(),
        css=CSS,
        head=ranking.KEYBOARD_JS,
        footer_links=["api", "settings"],
        prevent_thread_lock=not block,
        quiet=not block,
        # Gradio then asks the server it has just started for its page, once, with a 3 s timeout, and
        # aborts a server that runs fine when the machine is too busy to answer in time (seen in CI
        # with training beside it). The studio listens on the address it was given; no check needed.
        _frontend=False,
    )
    return url


def set_threads(requested: int | None) -> None:
    """Choose torch's CPU threads for the studio's own generation and say why (runs choose their own)."""
    import os

    from rlhf.threads import apply_threads

    env = os.environ.get("STUDIO_THREADS", "")
    info = apply_threads(requested or (int(env) if env.isdigit() else 0))
    print(f"torch threads for the studio's generation: {info['why']}", flush=True)


def serve(args: argparse.Namespace) -> int:
    """Open the store (this process becomes its single writer) and serve until stopped."""
    set_threads(getattr(args, "threads", None))
    ctx = StudioContext.open(db_path(args.db))
    try:
        launch(ctx, build_app(ctx), args.host, args.port, args.share)
    finally:
        ctx.close()
    return 0


def standalone(build: Callable[[StudioContext], gr.Blocks]) -> None:
    """Run one screen on its own (``python -m studio.<screen>``)."""
    parser = argparse.ArgumentParser(description="Run one RLHF Studio screen on its own.")
    add_server_arguments(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    ctx = StudioContext.open(db_path(args.db))
    try:
        launch(ctx, build(ctx), args.host, args.port, args.share)
    finally:
        ctx.close()
