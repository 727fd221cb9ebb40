"""The ranking screen: annotators rank the k replies of one prompt at a time.

Keyboard: focus a reply (click it or Tab) and press a digit to set its rank (with no reply
focused, the first unranked one takes it), Enter or Ctrl+Enter submits, S skips (type the reason
first). Pairwise projects (k = 2): A, B, T (tie), X (both bad).

Run alone: ``python -m studio.ranking``. The handlers are plain functions returning a
:class:`View`; ``build`` turns views into component updates.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import gradio as gr

from annotations.queue import QueueItem, next_prompt, progress, save_draft, skip_prompt, submit_ranking
from annotations.store import StoreError
from studio.context import StudioContext
from studio.permissions import current_user
from studio.render import UserError, conversation_markdown, neutralise_html

MAX_K = 8
LETTERS = "ABCDEFGH"
PAIRWISE = {"A": ([1, 2], False), "B": ([2, 1], False), "tie": ([1, 1], False), "both_bad": ([1, 1], True)}

KEYBOARD_JS = """
<script>
(() => {
  const visible = (el) => el && el.offsetParent !== null;
  const cards = () => [...document.querySelectorAll('.reply-card')].filter(visible);
  const click = (sel) => { const b = document.querySelector(sel); if (visible(b)) b.click(); };
  setInterval(() => document.querySelectorAll('.reply-card:not([tabindex])').forEach(c => c.setAttribute('tabindex', '0')), 500);
  document.addEventListener('keydown', (e) => {
    if (!visible(document.querySelector('#ranking-screen'))) return;
    const t = e.target;
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); click('#rank-submit'); return; }
    const typing = t && (t.tagName === 'TEXTAREA' || (t.tagName === 'INPUT' && !['radio', 'checkbox'].includes(t.type)));
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    const key = e.key.toLowerCase();
    if (visible(document.querySelector('#pairwise-row'))) {
      const map = {a: '#pair-a', b: '#pair-b', t: '#pair-tie', x: '#pair-bad'};
      if (map[key]) { e.preventDefault(); click(map[key]); return; }
    } else if (/^[1-9]$/.test(e.key)) {
      const all = cards();
      let card = all.find(c => c.contains(document.activeElement));
      if (!card) card = all.find(c => !c.querySelector('input:checked'));
      if (!card) return;
      const input = card.querySelector(`input[type=radio][value="${e.key}"]`);
      if (!input) return;
      e.preventDefault();
      input.click();
      const next = all[all.indexOf(card) + 1];
      (next || card).focus();
      return;
    }
    if (e.key === 'Enter') { e.preventDefault(); click('#rank-submit'); return; }
    if (key === 's') {
      e.preventDefault();
      const box = document.querySelector('#skip-reason textarea');
      if (box && box.value.trim()) click('#rank-skip'); else if (box) box.focus();
    }
  });
})();
</script>
"""


@dataclass
class View:
    """Everything the ranking screen shows, as plain data."""

    state: dict | None = None
    progress: str = ""
    guidelines: str = ""
    conversation: str = ""
    replies: list[str] = field(default_factory=list)
    ranks: list[int | None] = field(default_factory=list)
    mode: str | None = None  # "ranking" | "pairwise" | None when nothing is left
    rationale: str = ""
    status: str = ""


def _view(ctx: StudioContext, project_id: int, user_id: int, item: QueueItem | None, status: str = "") -> View:
    p = progress(ctx.store, project_id, user_id)
    summary = f"**{p.done}** ranked · **{p.left}** left for you · project {p.complete}/{p.prompts} prompts complete"
    if item is None:
        project = ctx.store.project(project_id)
        done = "Nothing left to rank in this project. Thank you!"
        return View(None, summary, project.guidelines, f"*{done}*", [], [], None, "", f"{status} {done}".strip())
    state = {
        "project_id": project_id,
        "prompt_id": item.prompt.id,
        "reply_ids": [r.id for r in item.replies],
        "key": uuid.uuid4().hex,  # one key per prompt shown: a double click stores one ranking
        "loaded": time.time(),
    }
    replies = [f"#### Reply {LETTERS[n]}\n\n{neutralise_html(r.text)}" for n, r in enumerate(item.replies)]
    ranks = [item.draft_ranks.get(r.id) for r in item.replies]
    return View(
        state,
        summary,
        item.project.guidelines,
        conversation_markdown(item.prompt.conversation),
        replies,
        ranks,
        item.project.mode,
        item.draft_rationale,
        status,
    )


def open_project(ctx: StudioContext, project: str | None, request: gr.Request | None) -> View:
    """Show the annotator's next prompt (their own draft first) in a project."""
    user = current_user(ctx.store, request)
    if not project:
        return View(status="Choose a project.")
    try:
        proj = ctx.store.project(project)
        return _view(ctx, proj.id, user.id, next_prompt(ctx.store, proj.id, user.id))
    except StoreError as exc:
        raise UserError(str(exc)) from exc


def _ranks_by_id(state: dict, ranks: list) -> dict[int, int | None]:
    out = {}
    for rid, value in zip(state["reply_ids"], ranks, strict=False):
        out[rid] = int(value) if value not in (None, "") else None
    return out


def submit(ctx: StudioContext, state: dict | None, ranks: list, rationale: str, request: gr.Request | None, both_bad: bool = False) -> View:
    """Store the ranking and show the next prompt; an invalid ranking changes nothing."""
    user = current_user(ctx.store, request)
    if not state:
        raise UserError("There is no prompt to rank; choose a project.")
    try:
        result = submit_ranking(
            ctx.store,
            user.id,
            state["prompt_id"],
            _ranks_by_id(state, ranks),
            rationale=rationale or "",
            key=state["key"],
            seconds_spent=time.time() - state["loaded"],
            both_bad=both_bad,
        )
        item = next_prompt(ctx.store, state["project_id"], user.id)
    except StoreError as exc:
        raise UserError(str(exc)) from exc
    status = "Already saved (double click ignored)." if result.duplicate else "Saved."
    return _view(ctx, state["project_id"], user.id, item, status)


def pairwise(ctx: StudioContext, state: dict | None, verdict: str, rationale: str, request: gr.Request | None) -> View:
    """Pairwise verdicts: A better, B better, tie, or both bad (a tie flagged as bad)."""
    ranks, both_bad = PAIRWISE[verdict]
    return submit(ctx, state, ranks, rationale, request, both_bad=both_bad)


def skip(ctx: StudioContext, state: dict | None, reason: str, request: gr.Request | None) -> View:
    user = current_user(ctx.store, request)
    if not state:
        raise UserError("There is no prompt to skip.")
    try:
        skip_prompt(ctx.store, user.id, state["prompt_id"], reason, key=state["key"] + "-skip")
        item = next_prompt(ctx.store, state["project_id"], user.id)
    except StoreError as exc:
        raise UserError(str(exc)) from exc
    return _view(ctx, state["project_id"], user.id, item, "Skipped.")


def keep_draft(ctx: StudioContext, state: dict | None, ranks: list, rationale: str, request: gr.Request | None) -> str:
    """Save the half-done ranking so a reload brings it back."""
    if not state:
        return ""
    user = current_user(ctx.store, request)
    try:
        save_draft(ctx.store, user.id, state["prompt_id"], {k: v for k, v in _ranks_by_id(state, ranks).items() if v}, rationale or "")
    except StoreError as exc:
        return f"Draft not saved: {exc}"
    return "Draft saved."


def project_names(ctx: StudioContext) -> list[str]:
    return [p.name for p in ctx.store.projects()]


def build(ctx: StudioContext) -> gr.Blocks:
    with gr.Blocks(title="Rank replies") as screen:
        with gr.Column(elem_id="ranking-screen"):
            with gr.Row():
                project = gr.Dropdown(
                    choices=project_names(ctx), value=None, allow_custom_value=True, label="Project", scale=1, elem_id="rank-project"
                )
                progress_md = gr.Markdown(elem_id="rank-progress")
            with gr.Accordion("Guidelines", open=False, elem_id="rank-guidelines"):
                guidelines = gr.Markdown()
            with gr.Group(elem_id="rank-prompt-box"):
                conversation = gr.Markdown(elem_id="rank-prompt", container=True)
            gr.Markdown(
                "Rank every reply: 1 is best, equal numbers are ties. Keys: click or Tab to a reply and press its rank, "
                "Enter submits, S skips (type the reason first). Pairwise: A, B, T tie, X both bad.",
                elem_classes="hint",
            )
            cards, texts, radios = [], [], []
            with gr.Row(equal_height=False):
                for i in range(MAX_K):
                    with gr.Column(visible=False, elem_id=f"reply-card-{i}", elem_classes="reply-card", min_width=280) as card:
                        texts.append(gr.Markdown(elem_id=f"reply-text-{i}"))
                        radios.append(gr.Radio(choices=[], label=f"Rank of reply {LETTERS[i]}", elem_id=f"rank-{i}"))
                    cards.append(card)
            with gr.Row(visible=False, elem_id="pairwise-row") as pair_row:
                pair_a = gr.Button("A is better", elem_id="pair-a", variant="primary")
                pair_b = gr.Button("B is better", elem_id="pair-b", variant="primary")
                pair_tie = gr.Button("Tie", elem_id="pair-tie")
                pair_bad = gr.Button("Both bad", elem_id="pair-bad", variant="stop")
            rationale = gr.Textbox(label="Why? (optional)", lines=2, elem_id="rank-rationale")
            with gr.Row():
                submit_btn = gr.Button("Submit ranking", variant="primary", elem_id="rank-submit", scale=2)
                skip_reason = gr.Textbox(label="Skip reason", placeholder="e.g. replies unreadable", scale=2, elem_id="skip-reason")
                skip_btn = gr.Button("Skip", elem_id="rank-skip", scale=1)
            status = gr.Markdown(elem_id="rank-status")
            draft_note = gr.Markdown(elem_id="rank-draft")
        state = gr.State(None)

        outputs = [
            state,
            progress_md,
            guidelines,
            conversation,
            *cards,
            *texts,
            *radios,
            pair_row,
            submit_btn,
            rationale,
            skip_reason,
            status,
        ]

        def show(view: View, before: dict | None = None) -> list:
            """Component updates for a view; what did not change since ``before`` is skipped.

            Annotators submit all day: re-sending the layout (cards, radios, guidelines) for
            every prompt of the same project would cost more than the ranking itself.
            """
            k = len(view.replies)
            ranking = view.mode == "ranking"
            same = bool(before and view.state and before.get("layout") == (view.state["project_id"], k, view.mode))
            if view.state:
                view.state["layout"] = (view.state["project_id"], k, view.mode)
            skip = gr.skip()
            cards = [skip] * MAX_K if same else [gr.Column(visible=i < k) for i in range(MAX_K)]
            texts = [gr.Markdown(value=view.replies[i]) if i < k else (skip if same else gr.Markdown(value="")) for i in range(MAX_K)]
            if same and not ranking:
                radios = [skip] * MAX_K
            else:
                radios = [
                    gr.Radio(
                        choices=[str(n) for n in range(1, k + 1)],
                        value=str(view.ranks[i]) if i < k and view.ranks[i] else None,
                        visible=ranking,
                    )
                    if i < k or not same
                    else skip
                    for i in range(MAX_K)
                ]
            return [
                view.state,
                view.progress,
                skip if same else view.guidelines,
                view.conversation,
                *cards,
                *texts,
                *radios,
                skip if same else gr.Row(visible=view.mode == "pairwise"),
                skip if same else gr.Button(visible=ranking),
                view.rationale,
                "",
                view.status,
                "",
            ]

        def on_open(name, request: gr.Request):
            return show(open_project(ctx, name, request))

        # Radios go in as a set: the handler gets a dict, and Gradio still passes the request
        # (it cannot after *args).
        rank_inputs = {state, rationale, *radios}

        def on_submit(data: dict, request: gr.Request):
            return show(submit(ctx, data[state], [data[r] for r in radios], data[rationale], request), data[state])

        def on_pair(verdict):
            def handler(st, why, request: gr.Request):
                return show(pairwise(ctx, st, verdict, why, request), st)

            return handler

        def on_skip(st, reason, request: gr.Request):
            return show(skip(ctx, st, reason, request), st)

        def on_draft(data: dict, request: gr.Request):
            return keep_draft(ctx, data[state], [data[r] for r in radios], data[rationale], request)

        project.change(on_open, project, outputs, api_name="open_project")
        # Projects created since the page loaded show up when the list is opened.
        project.focus(lambda: gr.update(choices=project_names(ctx)), None, project, api_name=False, show_progress="hidden")
        submit_btn.click(on_submit, rank_inputs, outputs, api_name="submit_ranking")
        for button, verdict in ((pair_a, "A"), (pair_b, "B"), (pair_tie, "tie"), (pair_bad, "both_bad")):
            button.click(on_pair(verdict), [state, rationale], outputs, api_name=f"pairwise_{verdict.lower()}")
        skip_btn.click(on_skip, [state, skip_reason], outputs, api_name="skip_prompt")
        skip_reason.submit(on_skip, [state, skip_reason], outputs, api_name=False)
        for radio in radios:
            radio.input(on_draft, rank_inputs, draft_note, api_name=False, show_progress="hidden")
        rationale.blur(on_draft, rank_inputs, draft_note, api_name=False, show_progress="hidden")

        def on_load(request: gr.Request):
            # Serving a prompt claims it, so only annotators get one on page load; an admin
            # who merely opens the studio claims nothing until they choose a project here.
            names = project_names(ctx)
            if not current_user(ctx.store, request).is_admin and names:
                return [gr.Dropdown(choices=names, value=names[0]), *show(open_project(ctx, names[0], request))]
            return [gr.Dropdown(choices=names, value=None), *show(View(status="Choose a project to start ranking."))]

        screen.load(on_load, None, [project, *outputs], api_name=False)
    return screen


if __name__ == "__main__":
    from studio.app import standalone

    standalone(build)
