"""The "Arena" screen: two anonymous models answer the same prompt; the user votes, then sees who.

Anyone logged in may battle. A round: a prompt (drawn from the arena's prompt set, or typed
when the admin allows it), two contenders drawn by the admin's pair sampling (by default the
pairs whose order is least certain, :func:`rlhf.ratings.pair_weights`), both replies streamed
side by side, follow-up turns up to the admin's limit, then a vote: A better, B better, tie or
both bad. The contenders' names live only in the server-side session state until the vote is
stored; a failure is reported without naming the model. The vote is stored once per battle
(the battle's key makes a double click or a retried request harmless), with both full
conversations, the sampling settings and each model's lineage.

Thumbs up/down on each side's latest reply, once both have answered (before or after the vote):
the handler names the side only; the reply, its conversation, the model and the settings come
from the battle in the server-side session state, and the answer never names the model, so a
thumb cannot unblind the battle (:func:`thumb`).

Admins choose the contenders (registered models, or a model with a saved prompt-lab template:
an L1 variant), the prompt set and how pairs are sampled, in "Arena settings" on this screen.
Run alone: ``python -m studio.arena``.
"""

from __future__ import annotations

import random
import secrets
import time
from dataclasses import replace

import gradio as gr

from annotations.arena import ArenaSettings, Contender, battle_outcomes, load_settings, pair_counts, record_vote, save_settings
from annotations.export import labelled_records
from annotations.feedback import ShownReply, prompt_text, record_feedback
from annotations.store import StoreError
from annotations.templates import load_template, template_names
from rlhf.generation import SamplingParams
from rlhf.prompting import PromptTemplate, pick_demonstrations, render
from rlhf.ratings import bootstrap_ratings, pair_weights, sample_pair
from studio.context import StudioContext
from studio.permissions import ARENA, FEEDBACK, WRITE_CONTENT, allowed, current_user, require
from studio.render import UserError, conversation_html, plain_text

VOTE_LABELS = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both are bad"}
PROJECT_PREFIX = "project:"
PAIR_SAMPLING = {"Least certain pairs more often": "uncertain", "Uniform": "uniform"}
EMPTY_BATTLE: dict = {}
THUMBS = {"up": 1, "down": -1}


def _settings(ctx: StudioContext) -> ArenaSettings:
    return load_settings(ctx.store)


def arena_prompts(ctx: StudioContext, settings: ArenaSettings) -> list[str]:
    if not settings.prompt_project:
        return []
    try:
        project = ctx.store.project(settings.prompt_project)
    except StoreError:
        return []
    return [p.text for p in ctx.store.prompts(project.id)]


def draw_prompt(ctx: StudioContext, request: gr.Request | None) -> str:
    """A random prompt from the arena's prompt set."""
    require(ctx.store, request, ARENA)
    prompts = arena_prompts(ctx, _settings(ctx))
    if not prompts:
        raise UserError(
            "The arena has no prompt set; type a prompt instead."
            if _settings(ctx).allow_typed
            else "The arena has no prompts yet; ask an admin."
        )
    return random.SystemRandom().choice(prompts)


def choose_pair(ctx: StudioContext, settings: ArenaSettings, rng: random.Random) -> tuple[Contender, Contender]:
    """Two contenders: uniformly, or the pairs whose order is least certain more often."""
    by_label = {c.label: c for c in settings.contenders}
    labels = sorted(by_label)
    if len(labels) < 2:
        raise UserError("The arena needs at least two contenders; ask an admin to choose them.")
    if settings.pair_sampling == "uniform":
        a, b = rng.sample(labels, 2)
        return by_label[a], by_label[b]
    outcomes = [o for o in battle_outcomes(ctx.store) if o[0] in by_label and o[1] in by_label]
    ratings = []
    if len({m for o in outcomes for m in o[:2]}) >= 2:
        try:
            ratings = bootstrap_ratings(outcomes, rounds=30, seed=len(outcomes))
        except ValueError:
            ratings = []
    weights = pair_weights(labels, ratings, pair_counts(ctx.store))
    a, b = sample_pair(weights, rng)
    return by_label[a], by_label[b]


def _model_messages(ctx: StudioContext, settings: ArenaSettings, contender: Contender, turns: list[dict]) -> list[dict]:
    """What the contender's model is given: the user's conversation, the first turn through its template."""
    if not contender.template:
        return turns
    template = PromptTemplate.from_dict(load_template(ctx.store, contender.template))
    pool = labelled_records(ctx.store, settings.prompt_project) if template.demos != "none" and settings.prompt_project else []
    record = {"input": turns[0]["content"]}
    encoder = ctx.encoders.get("minilm-l6") if template.demos == "nearest" and pool else None
    first = render(template, record, pick_demonstrations(template, pool, record, encoder))
    return [*first, *turns[1:]]


def _params(settings: ArenaSettings) -> SamplingParams:
    return SamplingParams(settings.temperature, settings.top_p, settings.max_new_tokens)


def _lineage(ctx: StudioContext, contender: Contender) -> dict:
    try:
        entry = ctx.registry.get(contender.model)
        lineage = {"model": entry.name, "source": entry.source, **entry.lineage}
    except Exception:  # a model removed since: keep what is known
        lineage = {"model": contender.model}
    return {**lineage, **({"template": contender.template} if contender.template else {})}


def _panes(battle: dict) -> tuple[str, str]:
    return conversation_html(battle.get("a_conv", [])), conversation_html(battle.get("b_conv", []))


def _stream_turn(ctx: StudioContext, battle: dict, settings: ArenaSettings):
    """Stream side A's reply, then side B's, yielding the two panes as they grow.

    A failure marks the battle failed and says which side, never which model.
    """
    for side in ("a", "b"):
        contender = battle[f"{side}_contender"]
        conv = battle[f"{side}_conv"]
        user_turns = list(conv)
        reply = {"role": "assistant", "content": ""}
        conv.append(reply)
        try:
            engine = ctx.engines.get(contender.model)
            messages = _model_messages(ctx, settings, contender, user_turns)
            for text in engine.stream(messages, _params(settings)):
                reply["content"] = text
                yield _panes(battle)
        except Exception as exc:  # noqa: BLE001 - any failure ends the round, named by side only
            battle["failed"] = f"Model {side.upper()} could not answer ({type(exc).__name__}); start a new round."
            yield _panes(battle)
            return
        yield _panes(battle)


def _controls(battle: dict, settings: ArenaSettings) -> tuple:
    """(vote buttons interactive, follow-up interactive, turn note)."""
    ready = bool(battle) and not battle.get("voted") and not battle.get("failed") and battle.get("replied")
    turns = sum(1 for m in battle.get("a_conv", []) if m["role"] == "user") if battle else 0
    more = ready and turns < settings.max_turns
    note = f"Turn {turns} of {settings.max_turns}. Ask a follow-up, or vote." if ready and more else ("Vote when ready." if ready else "")
    vote = [gr.Button(interactive=ready) for _ in VOTE_LABELS]
    return (*vote, gr.Textbox(value="", interactive=more), gr.Button(interactive=more), note)


def start_battle(ctx: StudioContext, prompt: str, request: gr.Request | None, rng: random.Random | None = None) -> dict:
    """A new battle for ``prompt``: a fresh key, two contenders, nothing generated yet."""
    require(ctx.store, request, ARENA)
    settings = _settings(ctx)
    text = (prompt or "").strip()
    if not text:
        raise UserError("Type a prompt, or draw one from the arena's prompt set.")
    if not settings.allow_typed and text not in arena_prompts(ctx, settings):
        raise UserError("This arena uses its own prompt set: draw a prompt.")
    try:
        ctx.store.limits.check("prompt", text)  # refused now, not after two replies were generated
    except StoreError as exc:
        raise UserError(str(exc)) from exc
    a, b = choose_pair(ctx, settings, rng or random.Random(secrets.randbits(64)))
    source = f"project:{settings.prompt_project}" if text in arena_prompts(ctx, settings) else "typed"
    return {
        "key": secrets.token_hex(16),
        "a_contender": a,
        "b_contender": b,
        "a_conv": [{"role": "user", "content": text}],
        "b_conv": [{"role": "user", "content": text}],
        "source": source,
        "started": time.monotonic(),
        "sampling": {"temperature": settings.temperature, "top_p": settings.top_p, "max_new_tokens": settings.max_new_tokens},
    }


def vote(ctx: StudioContext, battle: dict, choice: str, request: gr.Request | None) -> tuple[dict, str]:
    """Store the vote (once per battle) and reveal the names."""
    user = require(ctx.store, request, ARENA)
    if not battle or not battle.get("replied"):
        raise UserError("Start a battle and let both models answer before voting.")
    if battle.get("failed"):
        raise UserError("This round failed; start a new one.")
    if battle.get("voted"):
        return battle, reveal(battle)  # a second click: the vote is stored once
    a, b = battle["a_contender"], battle["b_contender"]
    try:
        record_vote(
            ctx.store,
            key=battle["key"],
            annotator=user.name,
            contender_a=a.label,
            contender_b=b.label,
            conversation_a=battle["a_conv"],
            conversation_b=battle["b_conv"],
            vote=choice,
            prompt_source=battle["source"],
            sampling={"a": battle["sampling"], "b": battle["sampling"]},
            lineage={"a": _lineage(ctx, a), "b": _lineage(ctx, b)},
            seconds=time.monotonic() - battle["started"],
        )
    except StoreError as exc:
        raise UserError(str(exc)) from exc
    battle = {**battle, "voted": choice}
    return battle, reveal(battle)


def reveal(battle: dict) -> str:
    a, b = battle["a_contender"], battle["b_contender"]
    return (
        f"You voted **{VOTE_LABELS[battle['voted']]}**. Model A was **{plain_text(a.label)}**, "
        f"model B was **{plain_text(b.label)}**. Start a new round when you are ready."
    )


def shown_reply(battle: dict, side: str) -> ShownReply:
    """Side ``side``'s latest reply as the server showed it, from the battle's server-side state."""
    if side not in ("a", "b"):
        raise UserError("Choose side A or B.")
    if not battle or not battle.get("replied"):
        raise UserError("Wait until both models have answered, then give a thumb.")
    conv = battle[f"{side}_conv"]
    if not conv or conv[-1]["role"] != "assistant" or not conv[-1]["content"].strip():
        raise UserError(f"Model {side.upper()} has no reply to rate.")
    contender = battle[f"{side}_contender"]
    turn = sum(1 for m in conv if m["role"] == "user")
    settings = {**battle["sampling"], **({"template": contender.template} if contender.template else {})}
    return ShownReply(
        key=f"arena-{battle['key']}-{side}-{turn}",
        surface="arena",
        prompt=prompt_text(conv[:-1]),  # the conversation as this side's user saw it
        reply=conv[-1]["content"],
        model=contender.model,
        settings={**settings, "contender": contender.label},
    )


def thumb(ctx: StudioContext, battle: dict, side: str, direction: str, request: gr.Request | None) -> str:
    """Store the caller's thumb on one side's latest reply; the answer names the side, never the model."""
    user = require(ctx.store, request, FEEDBACK)
    if direction not in THUMBS:
        raise UserError("A thumb is up or down.")
    shown = shown_reply(battle, side)
    try:
        outcome = record_feedback(ctx.store, user.name, shown, THUMBS[direction])
    except StoreError as exc:
        # Store messages name fields, never values, so they cannot carry the model's name.
        raise UserError(str(exc)) from exc
    what = f"thumb {direction} for model {side.upper()}'s reply"
    return {"stored": f"Your {what} is stored.", "changed": f"Changed to a {what}.", "unchanged": f"Your {what} was already stored."}[
        outcome
    ]


# -- admin settings ------------------------------------------------------------------------------
def contender_options(ctx: StudioContext) -> list[str]:
    models = ctx.registry.names("causal-lm")
    return models + [f"{m} + template {t}" for m in models[:1] for t in template_names(ctx.store)]


def parse_contenders(ctx: StudioContext, picked: list[str], template_model: str | None) -> tuple[Contender, ...]:
    out = []
    names = set(template_names(ctx.store))
    for choice in picked or []:
        model, sep, rest = choice.partition(" + template ")
        if sep:
            if rest not in names:
                raise UserError(f"There is no saved template called {rest!r}.")
            base = template_model or model
            out.append(Contender(label=f"{base} + template {rest}", model=base, template=rest))
        else:
            out.append(Contender(label=model, model=model))
    return tuple(out)


def save_arena_settings(
    ctx: StudioContext,
    request: gr.Request | None,
    picked,
    template_model,
    project,
    allow_typed,
    sampling,
    temperature,
    max_tokens,
    max_turns,
) -> str:
    require(ctx.store, request, WRITE_CONTENT)
    contenders = parse_contenders(ctx, picked, template_model)
    for c in contenders:
        if c.model not in ctx.registry.names("causal-lm"):
            raise UserError(f"{c.model} is not a registered causal LM.")
    try:
        settings = replace(
            _settings(ctx),
            contenders=contenders,
            prompt_project=(project or "").removeprefix(PROJECT_PREFIX),
            allow_typed=bool(allow_typed),
            pair_sampling=PAIR_SAMPLING.get(sampling, sampling or "uncertain"),
            temperature=float(temperature),
            max_new_tokens=int(max_tokens),
            max_turns=int(max_turns),
        )
        save_settings(ctx.store, settings)
    except (StoreError, ValueError, TypeError) as exc:
        raise UserError(str(exc)) from exc
    return (
        f"Saved: {len(contenders)} contenders, "
        + (f"prompt set {plain_text(settings.prompt_project)}" if settings.prompt_project else "typed prompts only")
        + "."
    )


def settings_values(ctx: StudioContext) -> tuple:
    s = _settings(ctx)
    picked = [c.label if not c.template else f"{c.model} + template {c.template}" for c in s.contenders]
    sampling = next((k for k, v in PAIR_SAMPLING.items() if v == s.pair_sampling), s.pair_sampling)
    project = PROJECT_PREFIX + s.prompt_project if s.prompt_project else None
    return picked, project, s.allow_typed, sampling, s.temperature, s.max_new_tokens, s.max_turns


def build(ctx: StudioContext) -> gr.Blocks:
    with gr.Blocks() as screen:
        gr.Markdown(
            "Two anonymous models answer the same prompt. Read both, ask follow-ups if you like, then vote. "
            "The models' names are shown only after your vote.",
            elem_id="arena-intro",
        )
        battle = gr.State(EMPTY_BATTLE)
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", lines=2, placeholder="Type a prompt, or draw one", elem_id="arena-prompt", scale=5)
            with gr.Column(scale=1, min_width=160):
                draw_btn = gr.Button("Draw a prompt", elem_id="arena-draw")
                start_btn = gr.Button("Start battle", variant="primary", elem_id="arena-start")
        with gr.Row(equal_height=True):
            with gr.Column():
                gr.Markdown("### Model A")
                pane_a = gr.HTML(elem_id="arena-a", elem_classes=["reply-card"])
                with gr.Row():
                    thumbs_a = [gr.Button(icon, size="sm", elem_id=f"arena-a-{d}") for d, icon in (("up", "👍"), ("down", "👎"))]
            with gr.Column():
                gr.Markdown("### Model B")
                pane_b = gr.HTML(elem_id="arena-b", elem_classes=["reply-card"])
                with gr.Row():
                    thumbs_b = [gr.Button(icon, size="sm", elem_id=f"arena-b-{d}") for d, icon in (("up", "👍"), ("down", "👎"))]
        thumb_note = gr.Markdown(elem_id="arena-thumb-note")
        with gr.Row():
            follow = gr.Textbox(label="Follow-up (sent to both)", interactive=False, elem_id="arena-follow", scale=5)
            follow_btn = gr.Button("Send", interactive=False, elem_id="arena-send", scale=1)
        turn_note = gr.Markdown(elem_id="arena-turns")
        with gr.Row():
            vote_btns = [gr.Button(label, interactive=False, elem_id=f"arena-vote-{key}") for key, label in VOTE_LABELS.items()]
        result = gr.Markdown(elem_id="arena-result")
        new_btn = gr.Button("New round", elem_id="arena-new")

        with gr.Accordion("Arena settings (admins)", open=False, visible=False, elem_id="arena-settings") as settings_box:
            contenders = gr.Dropdown(label="Contenders", multiselect=True, choices=[], elem_id="arena-contenders")
            template_model = gr.Dropdown(label="Model for template variants", choices=[], elem_id="arena-template-model")
            project = gr.Dropdown(label="Prompt set (a project's prompts)", choices=[], elem_id="arena-project")
            allow_typed = gr.Checkbox(label="Users may type their own prompts", value=True, elem_id="arena-typed")
            sampling = gr.Radio(
                label="Pair sampling", choices=list(PAIR_SAMPLING), value="Least certain pairs more often", elem_id="arena-sampling"
            )
            with gr.Row():
                temperature = gr.Number(label="Temperature", value=0.7, elem_id="arena-temperature")
                max_tokens = gr.Number(label="Longest reply (tokens)", value=160, precision=0, elem_id="arena-max-tokens")
                max_turns = gr.Number(label="User turns before voting", value=3, precision=0, elem_id="arena-max-turns")
            save_btn = gr.Button("Save arena settings", elem_id="arena-save")
            saved = gr.Markdown(elem_id="arena-saved")

        controls = [*vote_btns, follow, follow_btn, turn_note]

        def on_draw(request: gr.Request):
            return draw_prompt(ctx, request)

        def on_start(text: str, request: gr.Request):
            state = start_battle(ctx, text, request)
            yield from _answer(state, _settings(ctx))

        def _answer(state: dict, settings: ArenaSettings):
            yield (state, *_panes(state), *_controls({}, settings), "")
            for panes in _stream_turn(ctx, state, settings):
                yield (state, *panes, *_controls({}, settings), "")
            state["replied"] = not state.get("failed")
            yield (state, *_panes(state), *_controls(state, settings), plain_text(state.get("failed") or ""))

        def on_follow(state: dict, text: str, request: gr.Request):
            require(ctx.store, request, ARENA)
            settings = _settings(ctx)
            text = (text or "").strip()
            if not state or state.get("voted") or not state.get("replied"):
                raise UserError("Start a battle first.")
            if not text:
                raise UserError("Type a follow-up message.")
            if sum(1 for m in state["a_conv"] if m["role"] == "user") >= settings.max_turns:
                raise UserError(f"This arena allows {settings.max_turns} turns; vote now.")
            state["replied"] = False
            for side in ("a", "b"):
                state[f"{side}_conv"].append({"role": "user", "content": text})
            yield from _answer(state, settings)

        def voter(choice: str):
            def on_vote(state: dict, request: gr.Request):
                state, text = vote(ctx, state, choice, request)
                return (state, text, *_controls(state, _settings(ctx)))

            return on_vote

        def thumber(side: str, direction: str):
            def on_thumb(state: dict, request: gr.Request):
                return thumb(ctx, state, side, direction, request)

            return on_thumb

        def on_new(request: gr.Request):
            require(ctx.store, request, ARENA)
            return (EMPTY_BATTLE, "", "", "", "", "", *_controls({}, _settings(ctx)))

        def on_save(picked, tmodel, proj, typed, samp, temp, toks, turns, request: gr.Request):
            return save_arena_settings(ctx, request, picked, tmodel, proj, typed, samp, temp, toks, turns)

        def on_load(request: gr.Request):
            user = current_user(ctx.store, request)
            settings = _settings(ctx)
            typed = gr.Textbox(
                interactive=settings.allow_typed, placeholder="Type a prompt, or draw one" if settings.allow_typed else "Draw a prompt"
            )
            if not allowed(user, WRITE_CONTENT):
                return (typed, gr.Accordion(visible=False), *(gr.skip() for _ in range(9)))
            picked, proj, allow, samp, temp, toks, turns = settings_values(ctx)
            lm = ctx.registry.names("causal-lm")
            projects = [PROJECT_PREFIX + p.name for p in ctx.store.projects()]
            return (
                typed,
                gr.Accordion(visible=True),
                gr.Dropdown(choices=contender_options(ctx) + [p for p in picked if p not in contender_options(ctx)], value=picked),
                gr.Dropdown(choices=lm, value=lm[0] if lm else None),
                gr.Dropdown(choices=projects, value=proj),
                allow,
                samp,
                temp,
                toks,
                turns,
                gr.skip(),
            )

        outputs = [battle, pane_a, pane_b, *controls, result]
        draw_btn.click(on_draw, None, prompt, api_name="arena_draw_prompt")
        started = start_btn.click(on_start, prompt, outputs, api_name="arena_start", concurrency_limit=2)
        followed = follow_btn.click(on_follow, [battle, follow], outputs, api_name="arena_follow_up", concurrency_limit=2)
        for key, btn in zip(VOTE_LABELS, vote_btns, strict=True):
            btn.click(voter(key), battle, [battle, result, *controls], api_name=f"arena_vote_{key}", concurrency_limit=1)
        for side, buttons in (("a", thumbs_a), ("b", thumbs_b)):
            for direction, btn in zip(THUMBS, buttons, strict=True):
                btn.click(thumber(side, direction), battle, thumb_note, api_name=f"arena_thumb_{side}_{direction}", concurrency_limit=1)
        # A new round stops replies still streaming, so the old battle cannot write over the new one.
        new_btn.click(
            on_new,
            None,
            [battle, pane_a, pane_b, prompt, result, thumb_note, *controls],
            api_name="arena_new_round",
            cancels=[started, followed],
        )
        save_btn.click(
            on_save,
            [contenders, template_model, project, allow_typed, sampling, temperature, max_tokens, max_turns],
            saved,
            api_name="arena_save_settings",
        )
        screen.load(
            on_load,
            None,
            [prompt, settings_box, contenders, template_model, project, allow_typed, sampling, temperature, max_tokens, max_turns, saved],
            api_name=False,
        )
    return screen


if __name__ == "__main__":
    from studio.app import standalone

    standalone(build)
