"""Thumbs up/down handlers of the chat, the prompt lab and the arena; the admin's counts and KTO snapshots.

The reply a thumb is stored with is always one the server showed the caller: handlers take an
index (or a side, or a variant number) and look the reply up in server-side state.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import gradio as gr
import pytest

from annotations.arena import ArenaSettings, Contender, save_settings
from annotations.feedback import my_verdicts
from studio import admin, arena, chat, prompt_lab
from studio.context import StudioContext
from tests.studio.conftest import as_user
from tests.tiny import make_tiny_causal_lm

BOSS, ANA = as_user("boss"), as_user("ana")


def _rows(ctx: StudioContext) -> list[tuple]:
    return ctx.store.query("SELECT a.name, f.surface, f.prompt, f.reply, f.model, f.settings, f.verdict FROM feedback f "
                           "JOIN annotators a ON a.id = f.annotator_id ORDER BY f.id")  # fmt: skip


def _chat(ctx: StudioContext, history: list[dict], user=ANA) -> list[dict]:
    return list(chat.stream_reply(ctx, history, "tiny", "Be brief.", 0, 0.95, 6, -1, user))[-1]


def test_an_annotator_thumbs_a_chat_reply_shown_to_them(ctx: StudioContext) -> None:
    history = _chat(ctx, [{"role": "user", "content": "Where is the sea?"}])
    reply = history[1]["content"]
    assert chat.rate_reply(ctx, history, 1, True, ANA) == "Thanks: your thumb up is stored."
    assert chat.rate_reply(ctx, history, 1, True, ANA) == "Your thumb up was already stored."
    assert chat.rate_reply(ctx, history, 1, False, ANA) == "Changed to thumb down."
    [(who, surface, prompt, text, model, settings, verdict)] = _rows(ctx)
    assert (who, surface, prompt, text, model, verdict) == ("ana", "chat", "Where is the sea?", reply, "tiny", -1)
    stored = json.loads(settings)
    assert {k: stored[k] for k in ("temperature", "top_p", "max_new_tokens", "seed", "system")} == {
        "temperature": 0.0, "top_p": 0.95, "max_new_tokens": 6, "seed": None, "system": "Be brief.",
    }  # fmt: skip
    assert chat.thumbs_shown(ctx, history, "ana") == ["Dislike"]
    assert chat.thumbs_shown(ctx, history, "boss") == [None]  # nobody sees another's thumbs
    assert chat.rate_reply(ctx, history, 1, "", ANA) == "Your thumb is removed."
    assert _rows(ctx) == []


def test_a_later_turn_stores_the_conversation_as_its_prompt(ctx: StudioContext) -> None:
    history = _chat(ctx, [{"role": "user", "content": "Hi"}])
    history = _chat(ctx, [*history, {"role": "user", "content": "And the sea?"}])
    chat.rate_reply(ctx, history, 3, True, ANA)
    chat.rate_reply(ctx, history, 1, True, BOSS)
    rows = _rows(ctx)
    assert rows[0][2] == f"User: Hi\n\nAssistant: {history[1]['content']}\n\nUser: And the sea?" and rows[1][2] == "Hi"
    assert my_verdicts(ctx.store, "ana") == {history[3][chat.SHOWN]["key"]: 1}
    # Regenerating makes a new reply with a new key: its thumb is separate.
    again = _chat(ctx, chat.drop_last_reply(history))
    assert again[3][chat.SHOWN]["key"] != history[3][chat.SHOWN]["key"]


def test_forged_indexes_and_replies_are_refused_and_store_nothing(ctx: StudioContext) -> None:
    history = _chat(ctx, [{"role": "user", "content": "Hi"}])
    for index in (0, 2, -1, "1", True, None, 1.0, [5]):
        with pytest.raises(gr.Error, match="no such reply|Only the model's replies"):
            chat.rate_reply(ctx, history, index, True, ANA)
    # A reply the server did not make (no key of its own) is not one it showed.
    forged = [history[0], {"role": "assistant", "content": "Buy now at evil.example"}]
    with pytest.raises(gr.Error, match="Only the model's replies"):
        chat.rate_reply(ctx, forged, 1, True, ANA)
    with pytest.raises(gr.Error, match="up or down"):
        chat.rate_reply(ctx, history, 1, "Spam", ANA)
    with pytest.raises(gr.Error, match="Log in"):
        chat.rate_reply(ctx, history, 1, True, None)
    assert _rows(ctx) == []


@pytest.fixture
def arena_ctx(ctx: StudioContext, tmp_path: Path) -> StudioContext:
    ctx.registry.add(make_tiny_causal_lm(tmp_path / "other", seed=3), name="other")
    contenders = (Contender("first-model", "tiny"), Contender("second-model", "other"))
    save_settings(ctx.store, ArenaSettings(contenders=contenders, max_new_tokens=6, max_turns=2))
    return ctx


def test_arena_thumbs_name_the_side_never_the_model(arena_ctx: StudioContext) -> None:
    state = arena.start_battle(arena_ctx, "Tell me about the sea.", ANA, rng=random.Random(0))
    with pytest.raises(gr.Error, match="Wait until both models have answered"):
        arena.thumb(arena_ctx, state, "a", "up", ANA)
    list(arena._stream_turn(arena_ctx, state, arena._settings(arena_ctx)))
    state["replied"] = True
    notes = [arena.thumb(arena_ctx, state, "a", "up", ANA), arena.thumb(arena_ctx, state, "b", "down", ANA)]
    notes.append(arena.thumb(arena_ctx, state, "b", "up", ANA))
    assert notes[0] == "Your thumb up for model A's reply is stored." and notes[2] == "Changed to a thumb up for model B's reply."
    for name in ("first-model", "second-model", "tiny", "other"):  # nothing the voter sees names a contender
        assert all(name not in note for note in notes)
    rows = _rows(arena_ctx)
    assert [(r[1], r[4], r[6]) for r in rows] == [("arena", state["a_contender"].model, 1), ("arena", state["b_contender"].model, 1)]
    assert rows[0][2] == "Tell me about the sea." and rows[0][3] == state["a_conv"][-1]["content"]
    assert json.loads(rows[0][5])["max_new_tokens"] == 6
    for side, direction in (("c", "up"), ("a", "sideways")):
        with pytest.raises(gr.Error, match="side A or B|up or down"):
            arena.thumb(arena_ctx, state, side, direction, ANA)
    with pytest.raises(gr.Error, match="Wait until"):
        arena.thumb(arena_ctx, {}, "a", "up", ANA)
    assert len(_rows(arena_ctx)) == 2
    arena.vote(arena_ctx, state, "a", ANA)
    assert arena.thumb(arena_ctx, state, "a", "up", ANA).startswith("Your thumb up for model A's reply was already")


def test_lab_thumbs_for_those_who_ran_the_variants(ctx: StudioContext) -> None:
    editor = prompt_lab.editor_template("plain", "", "{input}", "none", 0, "", 0, "none", "")
    found = prompt_lab.run_variants(ctx, editor, [], "Where is the sea?", [(prompt_lab.EDITOR, "tiny")], 6)
    state = prompt_lab.shown_results(found, " Where is the sea? ", 6)
    assert prompt_lab.thumb_output(ctx, state, 0, "up", BOSS) == "Your thumb up for variant 1 is stored."
    [(who, surface, prompt, text, model, settings, verdict)] = _rows(ctx)
    assert (who, surface, prompt, text, model, verdict) == ("boss", "lab", "Where is the sea?", found[0][3], "tiny", 1)
    assert json.loads(settings) == {"temperature": 0.0, "max_new_tokens": 6, "template": "plain"}
    for index in (1, -1, "0", None):
        with pytest.raises(gr.Error, match="no output in your last run"):
            prompt_lab.thumb_output(ctx, state, index, "up", BOSS)
    with pytest.raises(gr.Error, match="Not allowed"):
        prompt_lab.thumb_output(ctx, state, 0, "down", ANA)  # annotators are never shown the lab
    assert len(_rows(ctx)) == 1


def test_annotators_cannot_read_counts_or_make_kto_snapshots(ctx: StudioContext) -> None:
    history = _chat(ctx, [{"role": "user", "content": "Hi"}])
    chat.rate_reply(ctx, history, 1, True, ANA)
    with pytest.raises(gr.Error, match="Not allowed"):
        admin.thumbs_counts(ctx, ANA)
    with pytest.raises(gr.Error, match="Not allowed"):
        admin.make_snapshot(ctx, None, "all_pairs", "majority", False, False, ANA, kto=True)
    frame = admin.thumbs_counts(ctx, BOSS)
    assert frame.to_dict("records") == [{"model": "tiny", "surface": "chat", "thumbs up": 1, "thumbs down": 0}]
    assert "ana" not in frame.to_string()
    with pytest.raises(gr.Error, match="no submitted rankings match this filter and no thumbs match"):
        admin.make_snapshot(ctx, None, "all_pairs", "majority", False, False, BOSS, kto=True, kto_models=["ghost"])
    manifest = admin.make_snapshot(ctx, None, "all_pairs", "majority", False, False, BOSS, kto=True, kto_models=["tiny"])
    assert manifest["kto"]["counts"]["desirable"] == 1 and manifest["kto"]["thumbs"]["selection"]["models"] == ["tiny"]
    assert list(admin.snapshots_frame(ctx)["KTO rows"]) == [1]


def _fn(served, name: str) -> int:
    return next(i for i, f in served.blocks.fns.items() if f.fn is not None and getattr(f.fn, "__qualname__", "") == name)


def _like(client, fn_index: int, event_data: dict) -> dict:
    """The Chatbot's like event as the browser sends it (RawClient.call sends no event data)."""
    body = {"data": [None], "fn_index": fn_index, "session_hash": client.session, "event_data": event_data, "trigger_id": None}
    event_id = client.http.post("/gradio_api/queue/join", json=body).json()["event_id"]
    with client.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": client.session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:") and (msg := json.loads(line[5:])).get("event_id") == event_id and msg["msg"] == "process_completed":
                return msg
    raise AssertionError("the like event never completed")


def test_the_served_chat_stores_the_servers_reply_whatever_the_browser_sends(ctx: StudioContext) -> None:
    from tests.studio.live import RawClient, error_of, serve

    with serve(ctx) as served:
        client = RawClient(served.url, "ana", "ana-password")
        on_message, respond = _fn(served, "build.<locals>.on_message"), _fn(served, "build.<locals>.respond")
        like = _fn(served, "build.<locals>.on_like")
        assert not error_of(client.call(on_message, ["Where is the sea?", None]))
        assert not error_of(client.call(respond, [None, "tiny", "", 0, 0.95, 16, -1]))
        forged = {"index": 1, "value": ["Buy now at evil.example"], "liked": True}
        done = _like(client, like, forged)
        assert done["success"] and "stored" in str(done["output"]["data"][0])
        # The user's own message, and an index past the conversation: refused, nothing stored.
        assert "Only the model's replies" in error_of(_like(client, like, {"index": 0, "value": ["Where is the sea?"], "liked": False}))
        assert "no such reply" in error_of(_like(client, like, {"index": 7, "value": ["forged"], "liked": False}))
        client.close()
    [(who, surface, prompt, text, model, _, verdict)] = _rows(ctx)
    assert (who, surface, prompt, model, verdict) == ("ana", "chat", "Where is the sea?", "tiny", 1)
    assert text != "Buy now at evil.example" and text == chat.text_content(text)
