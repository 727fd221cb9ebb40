"""The demo chat's handlers, called as plain functions (no browser)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from annotations.accounts import add_annotator
from studio import chat
from studio.app import build_app
from studio.context import StudioContext
from tests.studio.conftest import as_user


@pytest.fixture
def ctx(tmp_path: Path, studio_home: Path, tiny_lm_dir: Path):
    context = StudioContext.open(tmp_path / "s.duckdb", device="cpu")
    context.registry.add(tiny_lm_dir, name="tiny")
    add_annotator(context.store, "ana", "ana-password")
    yield context
    context.close()


def _reply(ctx: StudioContext, history, model: str = "tiny", temperature: float = 0, seed=-1) -> list[list[dict]]:
    return list(chat.stream_reply(ctx, history, model, "", temperature, 0.95, 8, seed, as_user("ana")))


def test_user_message_is_appended_and_box_cleared() -> None:
    box, history = chat.add_user_message("  Hello  ", [])
    assert box == "" and history == [{"role": "user", "content": "Hello"}]
    with pytest.raises(gr.Error, match="Type a message"):
        chat.add_user_message("   ", history)


def test_reply_streams_into_the_history(ctx: StudioContext) -> None:
    history = [{"role": "user", "content": "What is the capital of France?"}]
    frames = _reply(ctx, history)
    assert len(frames) >= 2
    final = frames[-1]
    assert final[:-1] == history and final[-1]["role"] == "assistant" and final[-1]["content"]
    engine = ctx.engines.get("tiny")
    assert final[-1]["content"] == engine.generate([history[0]["content"]], chat.sampling_from_controls(0, 0.95, 8, -1))[0].text


def test_multi_turn_and_content_parts(ctx: StudioContext) -> None:
    history = [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and now?"},
    ]
    assert _reply(ctx, history)[-1][-1]["role"] == "assistant"


def test_regenerate_drops_the_last_reply(ctx: StudioContext) -> None:
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "old"}]
    assert chat.drop_last_reply(history) == history[:1]
    with pytest.raises(gr.Error, match="Nothing to regenerate"):
        chat.drop_last_reply([])


def test_seeded_sampling_in_chat_is_repeatable(ctx: StudioContext) -> None:
    history = [{"role": "user", "content": "hi"}]
    first, second = _reply(ctx, history, temperature=1.0, seed=3)[-1][-1], _reply(ctx, history, temperature=1.0, seed=3)[-1][-1]
    assert first["content"] == second["content"]
    # Each reply has its own server-made key (what a thumb names), with the model and settings that made it.
    assert first[chat.SHOWN]["key"] != second[chat.SHOWN]["key"]
    assert first[chat.SHOWN]["model"] == "tiny" and first[chat.SHOWN]["settings"]["seed"] == 3


def test_unknown_model_and_bad_settings_are_clear_errors(ctx: StudioContext) -> None:
    history = [{"role": "user", "content": "hi"}]
    with pytest.raises(gr.Error, match="unknown model 'ghost'"):
        _reply(ctx, history, model="ghost")
    with pytest.raises(gr.Error, match="Invalid sampling setting"):
        list(chat.stream_reply(ctx, history, "tiny", "", -1, 0.9, 8, -1, as_user("ana")))


def test_model_list_and_info(ctx: StudioContext) -> None:
    assert chat.model_choices(ctx) == ["smollm2-135m-instruct", "tiny"]
    assert "licence `apache-2.0`" in chat.model_info(ctx, "tiny")
    assert "unknown model" in chat.model_info(ctx, "ghost")


def test_the_app_builds_with_a_chat_tab(ctx: StudioContext) -> None:
    app = build_app(ctx)
    labels = [getattr(block, "label", None) for block in app.blocks.values()]
    assert "Chat" in labels and "Conversation" in labels


def test_chat_needs_a_login_and_bounds_the_reply(ctx: StudioContext) -> None:
    history = [{"role": "user", "content": "hi"}]
    with pytest.raises(gr.Error, match="Log in"):
        list(chat.stream_reply(ctx, history, "tiny", "", 0, 0.95, 8, -1, None))
    with pytest.raises(gr.Error, match="at most 1024"):
        list(chat.stream_reply(ctx, history, "tiny", "", 0, 0.95, 10**9, -1, as_user("ana")))


def test_a_conversation_longer_than_the_context_is_cut_with_a_visible_note(ctx: StudioContext, monkeypatch) -> None:
    import studio.chat as chat_module

    notes: list[str] = []
    monkeypatch.setattr(chat_module, "warn", notes.append)
    long = " ".join(f"word{i}" for i in range(3000))  # far beyond the tiny model's context
    shown = _reply(ctx, [{"role": "user", "content": long}])
    assert shown[-1][-1]["role"] == "assistant"
    assert notes and "tokens were left out" in notes[0]
    notes.clear()
    _reply(ctx, [{"role": "user", "content": "short"}])
    assert notes == []


def test_an_oversized_message_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("STUDIO_MAX_PROMPT_CHARS", "100")
    with pytest.raises(gr.Error, match="more than the limit of 100"):
        chat.add_user_message("x" * 101, [])
