"""The demo chat: talk to any registered causal LM, replies streamed token by token.

Run alone: ``python -m studio.chat [--db studio.duckdb]``. The handlers below are plain
functions (tested without a browser); ``build`` wires them to the screen.

Thumbs up/down: each assistant reply in the server-side history carries, under ``SHOWN``, a key
the server made when it started the reply, the model that wrote it and the settings it used.
The Chatbot's ``.like`` event names a message by its index only; :func:`rate_reply` looks that
message up in the session's history (a gr.State, kept on the server) and stores the verdict
with the reply as the server showed it. Nothing of the reply comes from the browser.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

import gradio as gr

from annotations.feedback import ShownReply, clear_feedback, finish_reply, my_verdicts, new_key, prompt_text, record_feedback
from annotations.importers import prompt_from_messages
from annotations.limits import Limits
from annotations.store import ReplyRecord, StoreError
from rlhf.generation import SamplingParams, text_content
from rlhf.modelfiles import ModelError
from rlhf.registry import DEFAULT_CHAT_MODEL
from studio.context import StudioContext
from studio.permissions import CHAT, FEEDBACK, WRITE_CONTENT, allowed, require
from studio.render import UserError, markdown_html, warn

History = list[dict]
# Empty: the model's chat template supplies its own default system prompt.
DEFAULT_SYSTEM = ""
# Greedy by default: a 135M model's first-token distribution is often flat (for "What is the
# capital of France?" SmolLM2 gives "The" 0.15 vs "L" 0.14), so sampling wanders off.
DEFAULT_TEMPERATURE = 0.0
# The slider's top; the server refuses more, whatever a hand-made request asks for.
MAX_NEW_TOKENS = 1024
# Where an assistant reply of the server-side history keeps what a thumb stores with it.
SHOWN = "shown"
THUMB_NOTES = {"stored": "Thanks: your {} is stored.", "changed": "Changed to {}.", "unchanged": "Your {} was already stored."}


def add_user_message(message: str, history: History | None) -> tuple[str, History]:
    """Append the user's message; the box is cleared. Empty or oversized messages are refused."""
    if not message or not message.strip():
        raise UserError("Type a message first.")
    try:
        Limits.from_env().check("prompt", message.strip(), "this message")
    except StoreError as exc:
        raise UserError(str(exc)) from exc
    return "", [*(history or []), {"role": "user", "content": message.strip()}]


def sampling_from_controls(temperature: float, top_p: float, max_new_tokens: float, seed: float | None) -> SamplingParams:
    if max_new_tokens is not None and float(max_new_tokens) > MAX_NEW_TOKENS:
        raise UserError(f"Max new tokens is at most {MAX_NEW_TOKENS}.")
    try:
        return SamplingParams(
            temperature=float(temperature),
            top_p=float(top_p),
            max_new_tokens=int(max_new_tokens),
            seed=None if seed in (None, "", -1) else int(seed),
        )
    except ValueError as exc:
        raise UserError(f"Invalid sampling setting: {exc}") from exc


def stream_reply(
    ctx: StudioContext,
    history: History,
    model: str,
    system: str,
    temperature: float,
    top_p: float,
    max_new_tokens: float,
    seed: float | None,
    request: gr.Request | None,
) -> Iterator[History]:
    """Stream the assistant's answer to the conversation's last user message."""
    require(ctx.store, request, CHAT)
    if not history or history[-1]["role"] != "user":
        return
    params = sampling_from_controls(temperature, top_p, max_new_tokens, seed)
    try:
        engine = ctx.engines.get(model or DEFAULT_CHAT_MODEL)
    except ModelError as exc:
        raise UserError(str(exc)) from exc
    conversation = [{"role": m["role"], "content": m["content"]} for m in history]
    name = model or DEFAULT_CHAT_MODEL
    settings = {**asdict(params), "system": system.strip()}
    # Made before the first token, so a reply stopped half-way can still get a thumb.
    reply = {"role": "assistant", "content": "", SHOWN: {"key": new_key("chat"), "model": name, "settings": settings}}
    shown = [*history, reply]
    info: dict = {}
    for text in engine.stream(conversation, params, system=system.strip() or None, info=info):
        reply["content"] = text
        yield shown
    # A thumb given while the reply streamed stored the text shown then: it now gets the whole reply.
    finish_reply(ctx.store, reply[SHOWN]["key"], reply["content"])
    if info.get("truncated_tokens"):
        # The model never saw the start of a conversation longer than its context: say so.
        warn(
            f"The conversation is longer than {model or DEFAULT_CHAT_MODEL} can read: its first "
            f"{info['truncated_tokens']} tokens were left out of this reply. Clear the chat to start afresh."
        )
    yield shown


def chat_display(history: History | None) -> History:
    """The conversation as the Chatbot shows it: each turn's text rendered to safe HTML.

    The Chatbot renders Markdown in the browser and its sanitiser keeps <img> and <a>, so a
    reply (or a pasted message) could load a beacon or show a phishing link. It gets this
    server-rendered copy instead (with render_markdown off, so the browser adds nothing), while
    the raw history, the text the model reads, lives in a gr.State on the server.
    """
    return [{"role": m["role"], "content": markdown_html(text_content(m["content"]))} for m in history or []]


def rate_reply(ctx: StudioContext, history: History | None, index: object, liked: object, request: gr.Request | None) -> str:
    """Store (or change, or clear) the caller's thumb on the reply at ``index`` of the server-side history.

    ``liked`` is what the Chatbot's like event sends: True (thumb up), False (thumb down) or ""
    (the thumb taken back). The reply, its prompt, model and settings come from ``history``.
    """
    user = require(ctx.store, request, FEEDBACK)
    if liked is True:
        verdict = 1
    elif liked is False:
        verdict = -1
    elif liked in ("", None):
        verdict = 0
    else:
        raise UserError("A thumb is up or down.")
    shown = shown_reply(history, index)
    try:
        if verdict == 0:
            return "Your thumb is removed." if clear_feedback(ctx.store, user.name, shown.key) else "There was no thumb to remove."
        outcome = record_feedback(ctx.store, user.name, shown, verdict)
    except StoreError as exc:
        raise UserError(str(exc)) from exc
    return THUMB_NOTES[outcome].format("thumb up" if verdict > 0 else "thumb down")


def shown_reply(history: History | None, index: object) -> ShownReply:
    """The reply at ``index`` as this server showed it; gr.Error for any index that is not one."""
    history = history or []
    if isinstance(index, (list, tuple)) and len(index) == 1:
        index = index[0]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(history):
        raise UserError("There is no such reply in this chat; reload the page.")
    message = history[index]
    meta = message.get(SHOWN) if isinstance(message, dict) else None
    if message.get("role") != "assistant" or not isinstance(meta, dict):
        raise UserError("Only the model's replies in this chat can get a thumb.")
    turns = [{"role": m["role"], "content": text_content(m["content"])} for m in history[:index]]
    return ShownReply(
        key=meta["key"],
        surface="chat",
        prompt=prompt_text(turns),
        reply=text_content(message["content"]),
        model=meta["model"],
        settings=meta["settings"],
    )


def thumbs_shown(ctx: StudioContext, history: History | None, user: str) -> list[str | None]:
    """The Chatbot's feedback_value: the caller's own thumb on each assistant message, in order."""
    replies = [m for m in history or [] if m["role"] == "assistant"]
    mine = my_verdicts(ctx.store, user, [m[SHOWN]["key"] for m in replies if SHOWN in m])
    marks = {1: "Like", -1: "Dislike"}
    return [marks.get(mine.get(m.get(SHOWN, {}).get("key"))) for m in replies]


def drop_last_reply(history: History | None) -> History:
    """For regenerate: remove the last assistant turn so it can be answered again."""
    history = list(history or [])
    while history and history[-1]["role"] == "assistant":
        history.pop()
    if not history:
        raise UserError("Nothing to regenerate yet.")
    return history


def send_to_queue(
    ctx: StudioContext,
    history: History | None,
    project: str | None,
    model: str,
    temperature: float,
    top_p: float,
    max_new_tokens: float,
    request: gr.Request | None,
) -> str:
    """Put the conversation's last question into a project's queue, with replies up to k (admins only).

    The chat's own answer (if any) becomes the first candidate; the model writes the rest with
    sampling (temperature at least 0.7, so the candidates differ). Annotators may not: only
    admins put prompts and replies into a project.
    """
    require(ctx.store, request, WRITE_CONTENT)
    if not project:
        raise UserError("Choose the project to send the prompt to.")
    turns = [{"role": m["role"], "content": text_content(m["content"])} for m in (history or [])]
    last_user = max((i for i, m in enumerate(turns) if m["role"] == "user"), default=None)
    if last_user is None:
        raise UserError("Ask something first: the last question of the chat is what goes to the queue.")
    conversation = turns[: last_user + 1]
    answer = next((m["content"] for m in turns[last_user + 1 :] if m["role"] == "assistant" and m["content"].strip()), None)
    sampling = sampling_from_controls(max(float(temperature), 0.7), top_p, max_new_tokens, None)
    try:
        proj = ctx.store.project(project)
        [prompt_id] = ctx.store.add_prompts(proj.id, [prompt_from_messages(conversation, source="chat")])
        if answer:
            checkpoint = str(ctx.registry.resolve(model))
            ctx.store.add_replies(prompt_id, [ReplyRecord(answer, model=model, checkpoint=checkpoint, sampling={"from": "chat"})])
    except (StoreError, ModelError) as exc:
        raise UserError(str(exc)) from exc
    have = 1 if answer else 0
    if have >= proj.k:
        return f"Sent to **{proj.name}** with its {proj.k} replies."
    try:
        job = ctx.jobs.start(proj.id, [model], sampling, prompt_ids=[prompt_id])
    except (ValueError, ModelError) as exc:
        return f"Sent to **{proj.name}**; replies were not generated now ({exc}). Use Admin > Candidates later."
    return f"Sent to **{proj.name}**; generating {proj.k - have} more replies with {model} (job {job.id})."


def model_choices(ctx: StudioContext) -> list[str]:
    return ctx.registry.names("causal-lm")


def model_info(ctx: StudioContext, name: str) -> str:
    try:
        entry = ctx.registry.get(name)
    except ModelError as exc:
        return f"⚠️ {exc}"
    params = f"{entry.params / 1e6:.0f}M parameters" if entry.params else "size unknown"
    info = f"**{entry.name}** · {params} · licence `{entry.licence}`"
    if entry.lineage:
        info += " · from " + ", ".join(f"{k} `{v}`" for k, v in entry.lineage.items())
    if entry.commercial_use_warning:
        info += f"\n\n⚠️ {entry.commercial_use_warning}"
    return info


def build(ctx: StudioContext) -> gr.Blocks:
    with gr.Blocks(title="Chat") as screen:
        with gr.Row():
            with gr.Column(scale=3):
                # Display only: it shows chat_display(history), HTML rendered and sanitised on the
                # server, as is (no Markdown or LaTeX pass in the browser; Gradio's own sanitiser
                # stays on as a second net). No copy button: it would copy that HTML.
                chatbot = gr.Chatbot(
                    label="Conversation",
                    height=480,
                    placeholder="Ask the model anything. Replies stream as they are written.",
                    buttons=[],
                    # Thumbs on each reply: the like event sends the message's index, nothing more is trusted.
                    feedback_options=("Like", "Dislike"),
                    render_markdown=False,
                    sanitize_html=True,
                    latex_delimiters=[],
                    allow_tags=False,
                    elem_classes="rendered",
                )
                # The conversation as the model sees it (raw text), kept on the server.
                history_state = gr.State([])
                message = gr.Textbox(
                    placeholder="Message (Enter to send, Shift+Enter for a new line)",
                    show_label=False,
                    lines=1,
                    max_lines=8,
                    autofocus=True,
                    elem_id="chat-input",
                )
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="chat-send")
                    stop = gr.Button("Stop", elem_id="chat-stop")
                    regenerate = gr.Button("Regenerate", elem_id="chat-regenerate")
                    clear = gr.Button("Clear", elem_id="chat-clear")
                thumb_note = gr.Markdown(elem_id="chat-thumb-note")
            with gr.Column(scale=1, min_width=260):
                model = gr.Dropdown(choices=model_choices(ctx), value=DEFAULT_CHAT_MODEL, label="Model", elem_id="chat-model")
                info = gr.Markdown(model_info(ctx, DEFAULT_CHAT_MODEL))
                system = gr.Textbox(
                    value=DEFAULT_SYSTEM, label="System prompt", lines=3, placeholder="Empty = the model's default system prompt"
                )
                with gr.Accordion("Sampling", open=True):
                    temperature = gr.Slider(
                        0, 2, value=DEFAULT_TEMPERATURE, step=0.05, label="Temperature (0 = greedy; raise it for variety)"
                    )
                    top_p = gr.Slider(0.05, 1, value=0.95, step=0.05, label="Top-p")
                    max_new = gr.Slider(16, 1024, value=256, step=16, label="Max new tokens")
                    seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)")
                with gr.Accordion("Send to annotation queue", open=False, visible=False) as queue_box:
                    queue_project = gr.Dropdown(
                        allow_custom_value=True,
                        choices=[],
                        label="Project",
                        elem_id="chat-queue-project",
                    )
                    queue_btn = gr.Button("Send the last question", elem_id="chat-queue-send")
                    queue_status = gr.Markdown(elem_id="chat-queue-status")

        settings = [model, system, temperature, top_p, max_new, seed]

        def respond(history, name, system_, temp, top, max_tokens, seed_, request: gr.Request):
            before = chat_display(history)  # rendered once; each frame renders only the new reply
            frame = history
            for frame in stream_reply(ctx, history, name, system_, temp, top, max_tokens, seed_, request):
                yield frame, before + chat_display(frame[len(history) :])
            # The caller's own thumbs, so a re-rendered conversation shows them as they are stored.
            user = require(ctx.store, request, CHAT)
            yield frame, gr.Chatbot(value=before + chat_display(frame[len(history) :]), feedback_value=thumbs_shown(ctx, frame, user.name))

        def on_message(text, history, request: gr.Request):
            require(ctx.store, request, CHAT)
            box, history = add_user_message(text, history)
            return box, history, chat_display(history)

        def on_regenerate(history, request: gr.Request):
            require(ctx.store, request, CHAT)
            history = drop_last_reply(history)
            return history, chat_display(history)

        def on_model(name, request: gr.Request):
            require(ctx.store, request, CHAT)
            return model_info(ctx, name)

        def on_models(request: gr.Request):
            require(ctx.store, request, CHAT)
            return gr.update(choices=model_choices(ctx))

        shown = [history_state, chatbot]
        submitted = message.submit(on_message, [message, history_state], [message, *shown], queue=False, api_name=False).then(
            respond, [history_state, *settings], shown, api_name="chat_reply"
        )
        clicked = send.click(on_message, [message, history_state], [message, *shown], queue=False, api_name=False).then(
            respond, [history_state, *settings], shown, api_name=False
        )
        redo = regenerate.click(on_regenerate, history_state, shown, queue=False, api_name=False).then(
            respond, [history_state, *settings], shown, api_name=False
        )
        stop.click(None, cancels=[submitted, clicked, redo])

        def on_clear(request: gr.Request):
            require(ctx.store, request, CHAT)
            return [], []

        clear.click(on_clear, None, shown, queue=False, api_name=False)

        def on_like(history, like: gr.LikeData, request: gr.Request):
            if not isinstance(like, gr.LikeData):  # a hand-made request without the event's data
                require(ctx.store, request, FEEDBACK)
                raise UserError("There is no such reply in this chat; reload the page.")
            return rate_reply(ctx, history, like.index, like.liked, request)

        chatbot.like(on_like, history_state, thumb_note, queue=False, api_name="chat_thumb")
        model.change(on_model, model, info, queue=False, api_name=False)

        def on_send(history, project, name, temp, top, max_tokens, request: gr.Request):
            return send_to_queue(ctx, history, project, name, temp, top, max_tokens, request)

        queue_btn.click(on_send, [history_state, queue_project, model, temperature, top_p, max_new], queue_status, api_name="send_to_queue")

        def refresh(request: gr.Request):
            user = require(ctx.store, request, CHAT)
            # Only those who may send to a queue see the projects (and the accordion).
            projects = [p.name for p in ctx.store.projects()] if allowed(user, WRITE_CONTENT) else []
            return gr.update(choices=model_choices(ctx)), gr.update(choices=projects), gr.Accordion(visible=allowed(user, WRITE_CONTENT))

        screen.load(refresh, None, [model, queue_project, queue_box], queue=False, api_name=False)
        # Models trained while the page is open (reward, PPO, SFT runs) appear when the list opens.
        model.focus(on_models, None, model, queue=False, api_name=False)
    return screen


if __name__ == "__main__":
    from studio.app import standalone

    standalone(build)
