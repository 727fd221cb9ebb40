"""The ranking screen: annotators rank the k replies of one prompt at a time.

An annotator lands on the first project with work for them; the home view ("All projects")
lists every project with what is left for them, projects with work first. Progress is honest:
ranked, skipped, left for you, held by others (prompts other annotators' live claims keep from
you), and the project's completion. The last submission or skip can be undone for
``UNDO_WINDOW`` (it comes back as a draft).

Keyboard: focus a reply (click it or Tab) and press a digit to set its rank (with no reply
focused, the first unranked one takes it), Enter or Ctrl+Enter submits, S skips (type the reason
first). Pairwise projects (k = 2): A, B, T (tie), X (both bad). When a prompt opens, the first
unranked reply has the focus, so the keys work at once.

Every handler asks the permission module first, including the page load and the draft saves:
Gradio lets any logged-in client call any event by its index. The per-page state is not trusted
either: the prompt must be one the queue served this annotator in that project, and the reply
ids are re-derived from the store (the page only sends ranks in reply order).

A mistake the annotator can fix (an incomplete ranking, a missing skip reason, a rationale over
the limit) shows a warning toast and leaves the screen as it was, so they fix it and go on.

Run alone: ``python -m studio.ranking``. The handlers are plain functions returning a
:class:`View` (or None for "leave the screen as it is"); ``build`` turns views into updates.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import gradio as gr

from annotations.accounts import Annotator
from annotations.membership import open_projects
from annotations.queue import (
    UNDO_WINDOW,
    NotADraft,
    Progress,
    ProjectWork,
    QueueItem,
    next_with_progress,
    overview,
    progress,
    save_draft,
    served_prompt,
    skip_prompt,
    submit_ranking,
    undo_last,
)
from annotations.store import Project, StoreError
from studio.context import StudioContext
from studio.permissions import RANK, require
from studio.render import UserError, conversation_html, markdown_html, warn

MAX_K = 8
LETTERS = "ABCDEFGH"
PAIRWISE = {"A": ([1, 2], False), "B": ([2, 1], False), "tie": ([1, 1], False), "both_bad": ([1, 1], True)}
NOTHING_LEFT = "Nothing left to rank in this project. Thank you!"

# Runs after a prompt is shown (js= of a .then step): focus the first unranked reply, so digits
# rank replies instead of typing into the project list that was just used.
FOCUS_JS = "() => { if (window.rankFocusFirstReply) window.rankFocusFirstReply(); }"

KEYBOARD_JS = """
<script>
(() => {
  const visible = (el) => el && el.offsetParent !== null;
  const cards = () => [...document.querySelectorAll('.reply-card')].filter(visible);
  const click = (sel) => { const b = document.querySelector(sel); if (visible(b)) b.click(); };
  setInterval(() => document.querySelectorAll('.reply-card:not([tabindex])').forEach(c => c.setAttribute('tabindex', '0')), 500);
  // Called after a prompt is shown: the DOM updates a moment after the event ends, so retry a
  // little while; give up quietly when no reply shows (the home view, another tab).
  window.rankFocusFirstReply = (tries = 25) => {
    const all = cards();
    if (!all.length) { if (tries > 0) setTimeout(() => window.rankFocusFirstReply(tries - 1), 80); return; }
    const card = all.find(c => !c.querySelector('input:checked')) || all[0];
    card.setAttribute('tabindex', '0');
    if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
    card.focus();
  };
  document.addEventListener('keydown', (e) => {
    if (!visible(document.querySelector('#ranking-screen'))) return;
    const t = e.target;
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); click('#rank-submit'); return; }
    const typing = t && (t.tagName === 'TEXTAREA' || (t.tagName === 'INPUT' && !['radio', 'checkbox'].includes(t.type)));
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    if (!cards().length) return;  // the home view: nothing to rank
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
<style>
#rank-home-list .wrap { flex-direction: column; align-items: stretch; }
#rank-home-list label { justify-content: flex-start; }
#rank-home-button { align-self: flex-start; width: auto; }
.reply-label { margin: 0 0 6px 0; }
</style>
"""


@dataclass
class View:
    """Everything the ranking screen shows, as plain data (text already rendered to safe HTML)."""

    state: dict | None = None
    progress: str = ""
    guidelines: str = ""  # HTML
    conversation: str = ""  # HTML
    replies: list[str] = field(default_factory=list)  # HTML, one per reply
    ranks: list[int | None] = field(default_factory=list)
    mode: str | None = None  # "ranking" | "pairwise" | None: nothing to rank (the home list shows)
    rationale: str = ""
    status: str = ""
    project: str | None = None  # the open project's name; None on the home view
    home: list[tuple[str, str]] | None = None  # the home list, (label, project name); None: unchanged


def _user(ctx: StudioContext, request: gr.Request | None) -> Annotator:
    return require(ctx.store, request, RANK)


def _summary(ctx: StudioContext, project_id: int, user_id: int, counts: Progress | None = None) -> str:
    p = counts if counts is not None else progress(ctx.store, project_id, user_id)
    return (
        f"**{p.ranked}** ranked · **{p.skipped}** skipped · **{p.left}** left for you · **{p.held}** held by others"
        f" · project {p.complete}/{p.prompts} prompts complete"
    )


def work_label(work: ProjectWork) -> str:
    """One line of the home list (shown as text, never as HTML)."""
    p = work.progress
    if p.left:
        head = f"{p.left} left for you"
    elif p.prompts == 0:
        head = "no prompts yet"
    elif p.held:
        head = f"nothing for you now ({p.held} held by others)"
    else:
        head = "nothing left for you"
    return f"{work.project.name} — {head} · you: {p.ranked} ranked, {p.skipped} skipped · {p.complete}/{p.prompts} complete"


def _home_list(work: list[ProjectWork]) -> list[tuple[str, str]]:
    return [(work_label(w), w.project.name) for w in work]


def _home_view(ctx: StudioContext, user: Annotator, status: str = "", work: list[ProjectWork] | None = None) -> View:
    work = overview(ctx.store, user.id) if work is None else work
    with_work = sum(w.has_work for w in work)
    if not work:
        summary = "No projects yet."
    elif with_work:
        summary = f"Work for you in **{with_work}** of {len(work)} projects: pick one."
    else:
        summary = "Nothing to rank for you right now."
    return View(progress=summary, status=status, home=_home_list(work))


def _view(
    ctx: StudioContext, project: Project, user: Annotator, item: QueueItem | None, status: str = "", counts: Progress | None = None
) -> View:
    """The screen for a prompt (None: nothing left); ``counts``: the progress that came with the prompt, if it did."""
    summary = _summary(ctx, project.id, user.id, counts)
    if item is None:
        # The project stays open (undo still works); the home list offers the next one.
        state = {"project_id": project.id, "prompt_id": None}
        work = overview(ctx.store, user.id)
        return View(state, summary, mode=None, status=f"{status} {NOTHING_LEFT}".strip(), project=project.name, home=_home_list(work))
    state = {
        "project_id": project.id,
        "prompt_id": item.prompt.id,
        "key": uuid.uuid4().hex,  # one key per prompt shown: a double click stores one ranking
        "loaded": time.time(),
    }
    replies = [f'<h4 class="reply-label">Reply {LETTERS[n]}</h4>{markdown_html(r.text)}' for n, r in enumerate(item.replies)]
    return View(
        state,
        summary,
        markdown_html(item.project.guidelines),
        conversation_html(item.prompt.conversation),
        replies,
        [item.draft_ranks.get(r.id) for r in item.replies],
        item.project.mode,
        item.draft_rationale,
        status,
        project=item.project.name,
    )


def home(ctx: StudioContext, request: gr.Request | None) -> View:
    """The home view: every project with the work left in it for this annotator; claims nothing."""
    return _home_view(ctx, _user(ctx, request))


def landing(ctx: StudioContext, request: gr.Request | None) -> View:
    """What a page load shows: an annotator's first project with work, else (and for admins) the home view.

    Serving a prompt claims it, so an admin who merely opens the studio claims nothing.
    """
    user = _user(ctx, request)
    work = overview(ctx.store, user.id)
    first = next((w for w in work if w.has_work), None)
    if user.is_admin or first is None:
        return _home_view(ctx, user, "" if first else "Nothing to rank for you right now.", work)
    item, counts = next_with_progress(ctx.store, first.project.id, user.id)
    return _view(ctx, first.project, user, item, counts=counts)


def open_project(ctx: StudioContext, project: str | None, request: gr.Request | None) -> View | None:
    """Show the annotator's next prompt (their own draft first) in a project."""
    user = _user(ctx, request)
    if not project:
        return _home_view(ctx, user)
    try:
        proj = ctx.store.project(str(project))
        item, counts = next_with_progress(ctx.store, proj.id, user.id)
        return _view(ctx, proj, user, item, counts=counts)
    except StoreError as exc:
        warn(exc)
        return None


def _served(ctx: StudioContext, user: Annotator, state: object, missing: str) -> QueueItem | None:
    """The prompt this page shows, checked against the store: it must have been served to this
    annotator in that project. Warns and returns None otherwise (the state is the client's)."""
    if not isinstance(state, dict) or state.get("prompt_id") is None:
        warn(missing)
        return None
    try:
        project_id, prompt_id = int(state["project_id"]), int(state["prompt_id"])
    except (KeyError, TypeError, ValueError):
        warn("This page is out of date; reload it.")
        return None
    try:
        return served_prompt(ctx.store, user.id, project_id, prompt_id)
    except StoreError as exc:
        warn(exc)
        return None


def _rank(value: object) -> object:
    if value is None or value == "":
        return None
    try:
        return int(str(value))
    except ValueError:
        return value  # validate_ranks names it as invalid


def _key(user: Annotator, item: QueueItem, state: dict, suffix: str = "") -> str | None:
    """The idempotency key of this page's submission, scoped to the user and prompt on the server."""
    key = state.get("key")
    return f"{user.id}:{item.prompt.id}:{key}{suffix}" if isinstance(key, str) and key else None


def _seconds(state: dict) -> float | None:
    loaded = state.get("loaded")
    return max(0.0, time.time() - loaded) if isinstance(loaded, int | float) else None


def submit(
    ctx: StudioContext, state: dict | None, ranks: list, rationale: str, request: gr.Request | None, both_bad: bool = False
) -> View | None:
    """Store the ranking and show the next prompt; an invalid ranking warns and changes nothing."""
    user = _user(ctx, request)
    item = _served(ctx, user, state, "There is no prompt to rank; choose a project.")
    if item is None:
        return None
    return _store_ranking(ctx, user, item, state, ranks, rationale, both_bad)


def _store_ranking(
    ctx: StudioContext, user: Annotator, item: QueueItem, state: dict, ranks: list, rationale: str, both_bad: bool = False
) -> View | None:
    """Submit for an account and served prompt already checked (pairwise checks them once, not twice)."""
    ranks_by_id = {r.id: _rank(v) for r, v in zip(item.replies, list(ranks or []), strict=False)}
    try:
        result = submit_ranking(
            ctx.store,
            user.id,
            item.prompt.id,
            ranks_by_id,
            rationale=rationale or "",
            key=_key(user, item, state),
            seconds_spent=_seconds(state),
            both_bad=both_bad,
            served_in=item.project.id,
        )
        nxt, counts = next_with_progress(ctx.store, item.project.id, user.id)
    except StoreError as exc:
        warn(exc)
        return None
    status = "Already saved (double click ignored)." if result.duplicate else "Saved."
    return _view(ctx, item.project, user, nxt, status, counts)


def pairwise(ctx: StudioContext, state: dict | None, verdict: str, rationale: str, request: gr.Request | None) -> View | None:
    """Pairwise verdicts: A better, B better, tie, or both bad (a tie flagged as bad)."""
    user = _user(ctx, request)
    if verdict not in PAIRWISE:
        raise UserError(f"unknown verdict {verdict!r}")
    ranks, both_bad = PAIRWISE[verdict]
    item = _served(ctx, user, state, "There is no prompt to rank; choose a project.")
    if item is None:
        return None
    if item.project.mode != "pairwise":
        warn("This project ranks its replies: give each reply a rank, then submit.")
        return None
    return _store_ranking(ctx, user, item, state, ranks, rationale, both_bad)


def skip(ctx: StudioContext, state: dict | None, reason: str, request: gr.Request | None) -> View | None:
    """Skip the prompt with a reason; a missing or too long reason warns and changes nothing."""
    user = _user(ctx, request)
    item = _served(ctx, user, state, "There is no prompt to skip.")
    if item is None:
        return None
    try:
        skip_prompt(ctx.store, user.id, item.prompt.id, reason or "", key=_key(user, item, state, "-skip"), served_in=item.project.id)
        nxt, counts = next_with_progress(ctx.store, item.project.id, user.id)
    except StoreError as exc:
        warn(exc)
        return None
    return _view(ctx, item.project, user, nxt, "Skipped.", counts)


def undo(ctx: StudioContext, state: dict | None, request: gr.Request | None) -> View | None:
    """Take back this annotator's last submission or skip in the open project (within UNDO_WINDOW)."""
    user = _user(ctx, request)
    try:
        project_id = int(state["project_id"]) if isinstance(state, dict) else None
    except (KeyError, TypeError, ValueError):
        project_id = None
    if project_id is None:
        warn("Open a project first: undo takes back your last ranking in it.")
        return None
    try:
        done = undo_last(ctx.store, user.id, project_id)
    except StoreError as exc:
        warn(exc)
        return None
    if done.was is None:
        status = "This is the ranking you took back: change it and submit again."
    else:
        status = f"Took back your last {'skip' if done.was == 'skipped' else 'ranking'}: change it and submit again."
    return _view(ctx, done.item.project, user, done.item, status)


def keep_draft(ctx: StudioContext, state: dict | None, ranks: list, rationale: str, request: gr.Request | None) -> str:
    """Save the half-done ranking so a reload brings it back; the note shown under the buttons."""
    user = _user(ctx, request)
    if not isinstance(state, dict) or state.get("prompt_id") is None:
        return ""
    try:
        item = served_prompt(ctx.store, user.id, int(state["project_id"]), int(state["prompt_id"]))
        ranks_by_id = {r.id: _rank(v) for r, v in zip(item.replies, list(ranks or []), strict=False)}
        save_draft(
            ctx.store, user.id, item.prompt.id, {k: v for k, v in ranks_by_id.items() if v}, rationale or "", served_in=item.project.id
        )
    except NotADraft:
        return ""  # the submission got there first (the rationale's blur races the submit click)
    except (KeyError, TypeError, ValueError):
        return ""
    except StoreError as exc:
        warn(f"Draft not saved: {exc}")
        return "Draft not saved."
    return "Draft saved."


def project_names(ctx: StudioContext, request: gr.Request | None) -> list[str]:
    """The project list of the dropdown: names only."""
    user = _user(ctx, request)
    return [p.name for p in open_projects(ctx.store, user.id)]


def build(ctx: StudioContext) -> gr.Blocks:
    with gr.Blocks(title="Rank replies") as screen:
        with gr.Column(elem_id="ranking-screen"):
            with gr.Row(equal_height=False):
                project = gr.Dropdown(choices=[], value=None, allow_custom_value=True, label="Project", scale=2, elem_id="rank-project")
                with gr.Column(scale=3):
                    progress_md = gr.Markdown(elem_id="rank-progress")
                    home_btn = gr.Button("All projects", elem_id="rank-home-button", size="sm", variant="secondary", min_width=120)
            with gr.Column(visible=False, elem_id="rank-home") as home_col:
                gr.Markdown("#### Your projects\nProjects with work for you come first; pick one to start.", elem_classes="hint")
                home_list = gr.Radio(choices=[], label="Projects", show_label=False, elem_id="rank-home-list")
            with gr.Column(visible=False, elem_id="rank-work") as work_col:
                with gr.Accordion("Guidelines", open=False, elem_id="rank-guidelines"):
                    guidelines = gr.HTML(elem_classes="rendered")
                with gr.Group(elem_id="rank-prompt-box"):
                    conversation = gr.HTML(elem_id="rank-prompt", elem_classes="rendered", padding=True)
                gr.Markdown(
                    "Rank every reply: 1 is best, equal numbers are ties. Keys: click or Tab to a reply and press its rank, "
                    "Enter submits, S skips (type the reason first). Pairwise: A, B, T tie, X both bad.",
                    elem_classes="hint",
                )
                cards, texts, radios = [], [], []
                with gr.Row(equal_height=False):
                    for i in range(MAX_K):
                        with gr.Column(visible=False, elem_id=f"reply-card-{i}", elem_classes="reply-card", min_width=280) as card:
                            texts.append(gr.HTML(elem_id=f"reply-text-{i}", elem_classes="rendered"))
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
            with gr.Row(equal_height=True):
                minutes = int(UNDO_WINDOW.total_seconds() // 60)
                undo_btn = gr.Button(
                    f"Undo last submission ({minutes} min)", elem_id="rank-undo", size="sm", scale=0, min_width=200, visible=False
                )
                status = gr.Markdown(elem_id="rank-status")
                draft_note = gr.Markdown(elem_id="rank-draft")
        state = gr.State(None)

        outputs = [
            state,
            project,
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
            draft_note,
            home_col,
            work_col,
            home_list,
            undo_btn,
        ]

        def show(view: View | None, before: dict | None = None) -> list:
            """Component updates for a view, one per output; None leaves the screen as it is.

            Annotators submit all day: re-sending the layout (cards, radios, guidelines) for
            every prompt of the same project would cost more than the ranking itself, so what did
            not change since ``before`` is skipped.
            """
            skip = gr.skip()
            if view is None:
                return [skip] * len(outputs)
            k = len(view.replies)
            ranking = view.mode == "ranking"
            layout = (view.state["project_id"], k, view.mode) if view.state and view.mode else None
            same = bool(layout and isinstance(before, dict) and before.get("layout") == layout)
            if view.state:
                view.state["layout"] = layout
            cards = [skip] * MAX_K if same else [gr.Column(visible=i < k) for i in range(MAX_K)]
            texts = [view.replies[i] if i < k else (skip if same else "") for i in range(MAX_K)]
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
            working = view.mode is not None
            return [
                view.state,
                gr.update(value=view.project),
                view.progress,
                skip if same else view.guidelines,
                view.conversation,
                *cards,
                *texts,
                *radios,
                skip if same else gr.Row(visible=view.mode == "pairwise"),
                skip if same else gr.Button(visible=ranking),
                view.rationale,
                "",  # the skip reason belongs to the prompt that was shown
                view.status,
                "",  # a draft note belongs to the prompt that was shown
                skip if same else gr.Column(visible=not working),
                skip if same else gr.Column(visible=working),
                skip if view.home is None else gr.Radio(choices=view.home, value=None),
                skip if same else gr.Button(visible=view.state is not None),
            ]

        def on_open(name, request: gr.Request):
            return show(open_project(ctx, name, request))

        # Radios go in as a set: the handler gets a dict, and Gradio still passes the request
        # (it cannot after *args).
        rank_inputs = {state, rationale, *radios}

        def on_submit(data: dict, request: gr.Request):
            return show(submit(ctx, data[state], [data[r] for r in radios], data[rationale], request), data[state])

        # A verdict is given on a pairwise prompt and leads to the next prompt of the same project
        # (the same two cards, radios hidden) or to the home list, which hides the whole work column.
        # So its events leave out the reply cards, the radios and the texts past the first two:
        # Gradio builds a component for every output, skipped or not (0.4 to 1.2 ms each), and these
        # 22 were more than half the cost of a verdict's response. Opening a project or undoing
        # (all outputs, layout not "same") sets them again before the work column shows.
        pair_fixed = {id(c) for c in (*cards, *texts[2:], *radios)}
        pair_outputs = [o for o in outputs if id(o) not in pair_fixed]

        def on_pair(verdict):
            def handler(st, why, request: gr.Request):
                updates = show(pairwise(ctx, st, verdict, why, request), st)
                return [u for u, o in zip(updates, outputs, strict=True) if id(o) not in pair_fixed]

            return handler

        def on_skip(st, reason, request: gr.Request):
            return show(skip(ctx, st, reason, request), st)

        def on_undo(st, request: gr.Request):
            return show(undo(ctx, st, request), st)

        def on_home(request: gr.Request):
            return show(home(ctx, request))

        def on_draft(data: dict, request: gr.Request):
            return keep_draft(ctx, data[state], [data[r] for r in radios], data[rationale], request)

        def on_refresh(request: gr.Request):
            # Projects created since the page loaded show up when the list is opened.
            return gr.Dropdown(choices=project_names(ctx, request))

        def on_load(request: gr.Request):
            view = landing(ctx, request)
            updates = show(view)
            updates[outputs.index(project)] = gr.Dropdown(choices=project_names(ctx, request), value=view.project)
            return updates

        focus = {"fn": None, "inputs": None, "outputs": None, "js": FOCUS_JS, "show_progress": "hidden"}
        # .input, not .change: the handlers set the list's value themselves, which must not reopen it.
        project.input(on_open, project, outputs, api_name="open_project").then(**focus)
        home_list.input(on_open, home_list, outputs, api_name=False).then(**focus)
        home_btn.click(on_home, None, outputs, api_name=False)
        project.focus(on_refresh, None, project, api_name=False, show_progress="hidden")
        submit_btn.click(on_submit, rank_inputs, outputs, api_name="submit_ranking").then(**focus)
        for button, verdict in ((pair_a, "A"), (pair_b, "B"), (pair_tie, "tie"), (pair_bad, "both_bad")):
            button.click(on_pair(verdict), [state, rationale], pair_outputs, api_name=f"pairwise_{verdict.lower()}").then(**focus)
        skip_btn.click(on_skip, [state, skip_reason], outputs, api_name="skip_prompt").then(**focus)
        skip_reason.submit(on_skip, [state, skip_reason], outputs, api_name=False).then(**focus)
        undo_btn.click(on_undo, state, outputs, api_name="undo_last").then(**focus)
        for radio in radios:
            radio.input(on_draft, rank_inputs, draft_note, api_name=False, show_progress="hidden")
        rationale.blur(on_draft, rank_inputs, draft_note, api_name=False, show_progress="hidden")
        screen.load(on_load, None, outputs, api_name=False).then(**focus)
    return screen


if __name__ == "__main__":
    from studio.app import standalone

    standalone(build)
