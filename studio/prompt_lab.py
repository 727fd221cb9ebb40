"""The "Prompt lab" screen (L1): steer a frozen model with templates, demonstrations and chain-of-thought.

Edit a template (system prompt, a text with ``{placeholders}``, k demonstrations picked by
hand, at random with a seed, or as the input's nearest neighbours under MiniLM, from a pool
that is any project of the store or a file; chain-of-thought zero-shot or few-shot with worked
rationales). Run one input through up to four template / model variants side by side, see the
exact prompt each model got, evaluate a template over a labelled dataset (exact match, contains,
or a reward model's score), save templates in the store, and send the outputs to a project's
annotation queue as candidate replies. Everyone can use it; saving templates and sending to
the queue need an account, as the chat does. Run alone: ``python -m studio.prompt_lab``.

Each variant's output can get a thumb up or down (:func:`thumb_output`): the button names the
variant by number; the output, its input, model and settings come from the session's
server-side state of the last run. The stored prompt is the input, as "send to the queue" stores it.
"""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from annotations.export import labelled_records
from annotations.feedback import ShownReply, new_key, record_feedback
from annotations.store import PromptRecord, ReplyRecord, StoreError
from annotations.templates import load_template, save_template, template_names
from rlhf.generation import SamplingParams
from rlhf.instruction_data import InstructionFileError, read_records
from rlhf.modelfiles import ModelError
from rlhf.prompting import COT_MODES, DEMO_MODES, PromptTemplate, TemplateError, evaluate, pick_demonstrations, render
from rlhf.registry import DEFAULT_CHAT_MODEL, DEFAULT_ENCODER
from studio.context import StudioContext
from studio.permissions import FEEDBACK, NAME_PATHS, READ_RESULTS, TRAIN, WRITE_CONTENT, data_path, may, require
from studio.render import UserError, conversation_html, markdown_html, plain_text

EDITOR = "(the editor)"
VARIANTS = 4
PROJECT_PREFIX = "project:"
THUMBS = {"up": 1, "down": -1}


def pool_choices(ctx: StudioContext) -> list[tuple[str, str]]:
    return [(f"project {p.name} ({ctx.store.count_prompts(p.id)} records)", PROJECT_PREFIX + p.name) for p in ctx.store.projects()]


def load_records(ctx: StudioContext, source: str | None, request: gr.Request | None, limit: int | None = None) -> list[dict]:
    """Records from a project ("project:NAME": its best-ranked replies, i.e. the annotators'
    results) or a file inside the data folders; gr.Error when neither works or the caller may not."""
    if not source:
        return []
    if source.startswith(PROJECT_PREFIX):
        require(ctx.store, request, READ_RESULTS)
    else:
        require(ctx.store, request, NAME_PATHS)
    try:
        if source.startswith(PROJECT_PREFIX):
            return labelled_records(ctx.store, source[len(PROJECT_PREFIX) :], limit=limit)
        records = [r for _, r in read_records(data_path(ctx.data_roots, source))]
        return records[:limit] if limit else records
    except (StoreError, InstructionFileError) as exc:
        raise UserError(str(exc)) from exc


def parse_ids(text: str | None) -> list[int]:
    try:
        return [int(x) for x in (text or "").replace(",", " ").split()]
    except ValueError as exc:
        raise UserError(f"hand-picked demonstrations are pool numbers separated by commas, e.g. 0, 3, 5 (got {text!r})") from exc


def editor_template(name, system, template, demos, k, hand, seed, cot, trigger) -> PromptTemplate:
    t = PromptTemplate(
        name=(name or "untitled").strip(),
        system=system or "",
        template=template or "{input}",
        demos=demos or "none",
        k=int(k or 0),
        hand_picked=parse_ids(hand),
        seed=int(seed or 0),
        cot=cot or "none",
        cot_trigger=trigger or "Let's think step by step.",
    )
    try:
        t.check()
    except TemplateError as exc:
        raise UserError(str(exc)) from exc
    return t


def _encoder(ctx: StudioContext, template: PromptTemplate):
    if template.demos != "nearest":
        return None
    return ctx.encoders.get(DEFAULT_ENCODER)


def build_messages(ctx: StudioContext, template: PromptTemplate, pool: list[dict], text: str) -> list[dict]:
    record = {"input": text}
    try:
        return render(template, record, pick_demonstrations(template, pool, record, _encoder(ctx, template)))
    except TemplateError as exc:
        raise UserError(str(exc)) from exc


def run_variants(
    ctx: StudioContext,
    editor: PromptTemplate,
    pool: list[dict],
    text: str,
    variants: list[tuple[str | None, str | None]],
    max_new_tokens: int,
) -> list[tuple[str, str, list[dict], str]]:
    """(label, model, messages, output) for each variant with a template and a model; greedy decoding."""
    if not (text or "").strip():
        raise UserError("Type an input first.")
    out = []
    for template_name, model in variants:
        if not template_name or not model:
            continue
        template = editor if template_name == EDITOR else _saved(ctx, template_name)
        messages = build_messages(ctx, template, pool, text)
        try:
            [gen] = ctx.engines.get(model).generate([messages], SamplingParams(temperature=0, max_new_tokens=max_new_tokens))
        except ModelError as exc:
            raise UserError(str(exc)) from exc
        out.append((template.name if template_name == EDITOR else template_name, model, messages, gen.text))
    if not out:
        raise UserError("Choose a template and a model for at least one variant.")
    return out


def _saved(ctx: StudioContext, name: str) -> PromptTemplate:
    try:
        return PromptTemplate.from_dict(load_template(ctx.store, name))
    except StoreError as exc:
        raise UserError(str(exc)) from exc


def evaluate_template(
    ctx: StudioContext,
    template: PromptTemplate,
    pool: list[dict],
    dataset: list[dict],
    model: str,
    metric: str,
    reward_model: str | None,
    max_new_tokens: int,
) -> tuple[str, pd.DataFrame]:
    if not dataset:
        raise UserError("Choose a labelled dataset (a project or a file with input and output fields).")
    if not model:
        raise UserError("Choose the model to evaluate with.")
    engine = ctx.engines.get(model)

    def generate(conversations: list[list[dict]]) -> list[str]:
        return [g.text for g in engine.generate(conversations, SamplingParams(temperature=0, max_new_tokens=max_new_tokens))]

    reward = None
    if metric == "reward":
        if not reward_model:
            raise UserError("The reward metric needs a reward model.")
        scorer = ctx.scorers.get(reward_model)

        def reward(inputs: list[str], outputs: list[str]) -> list[float]:
            return scorer.score_batch(list(zip(inputs, outputs, strict=True)))

    try:
        mean, rows = evaluate(template, dataset, pool, generate, metric, _encoder(ctx, template), reward)
    except (TemplateError, ModelError) as exc:
        raise UserError(str(exc)) from exc
    frame = pd.DataFrame(
        [[r.input, r.expected, r.output, round(r.score, 4)] for r in rows], columns=["input", "expected", "output", "score"]
    )
    label = {"exact": "exact match", "contains": "contains the answer", "reward": f"mean {reward_model} score"}[metric]
    return f"**{html.escape(template.name)}** on {len(rows)} examples with {html.escape(model)}: {label} = **{mean:.3f}**", frame


def send_outputs(ctx: StudioContext, project: str | None, text: str, results: list[dict], request) -> str:
    """The input becomes a prompt of ``project``; the variants' outputs become its candidate replies.

    Admins only: ``results`` comes back from the browser, so whoever sends it could forge them.
    """
    require(ctx.store, request, WRITE_CONTENT)
    if not project:
        raise UserError("Choose the project to send to.")
    if not results:
        raise UserError("Run the variants first.")
    try:
        proj = ctx.store.project(project)
        [prompt_id] = ctx.store.add_prompts(proj.id, [PromptRecord(text.strip(), source="prompt lab")])
        replies = [
            ReplyRecord(
                r["output"],
                model=r["model"],
                checkpoint=str(ctx.registry.resolve(r["model"])),
                sampling={"from": "prompt lab", "template": r["template"]},
            )
            for r in results
            if r["output"].strip()
        ]
        if replies:
            ctx.store.add_replies(prompt_id, replies)
    except (StoreError, ModelError) as exc:
        raise UserError(str(exc)) from exc
    more = f"; it needs {proj.k - len(replies)} more (Admin > Candidates)" if len(replies) < proj.k else ""
    return f"Sent to **{html.escape(proj.name)}** with {len(replies)} candidate replies{more}."


def shown_results(found: list[tuple[str, str, list[dict], str]], text: str, max_new_tokens: int) -> list[dict]:
    """The server-side state of a run: each variant's output with a fresh reply key and its settings."""
    return [
        {
            "template": label,
            "model": model,
            "output": out,
            "key": new_key("lab"),
            "input": text.strip(),
            "settings": {"temperature": 0.0, "max_new_tokens": int(max_new_tokens), "template": label},
        }
        for label, model, _, out in found
    ]


def thumb_output(ctx: StudioContext, results: list[dict] | None, index: object, direction: str, request: gr.Request | None) -> str:
    """Store the caller's thumb on variant ``index``'s output of their last run (from the server-side state)."""
    require(ctx.store, request, TRAIN)  # only those who may use the lab were shown its outputs
    user = require(ctx.store, request, FEEDBACK)
    if direction not in THUMBS:
        raise UserError("A thumb is up or down.")
    results = results or []
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(results) or "key" not in results[index]:
        raise UserError("That variant has no output in your last run; run the variants first.")
    r = results[index]
    shown = ShownReply(key=r["key"], surface="lab", prompt=r["input"], reply=r["output"], model=r["model"], settings=r["settings"])
    try:
        outcome = record_feedback(ctx.store, user.name, shown, THUMBS[direction])
    except StoreError as exc:
        raise UserError(str(exc)) from exc
    what = f"thumb {direction} for variant {index + 1}"
    return {"stored": f"Your {what} is stored.", "changed": f"Changed to a {what}.", "unchanged": f"Your {what} was already stored."}[
        outcome
    ]


def build(ctx: StudioContext) -> gr.Blocks:
    with gr.Blocks() as screen:
        gr.Markdown(
            "Steer a frozen model with a prompt: a template, demonstrations (in-context learning) and chain-of-thought. "
            "Compare up to four variants on one input, evaluate one over a labelled dataset, keep the best as a template."
        )
        results_state = gr.State([])
        with gr.Row():
            with gr.Column(scale=2):
                gr.Markdown("### Template")
                name = gr.Dropdown(
                    label="Name (choose a saved one to load it)",
                    choices=template_names(ctx.store),
                    value=None,
                    allow_custom_value=True,
                    elem_id="lab-name",
                )
                system = gr.Textbox(label="System prompt", lines=2, elem_id="lab-system")
                template = gr.Textbox(
                    label="Template ({input} is the question; other {fields} come from the record)",
                    value="{input}",
                    lines=3,
                    elem_id="lab-template",
                )
                pool = gr.Dropdown(
                    label="Demonstration pool",
                    info="a project, or type the path of a file with input and output fields",
                    choices=pool_choices(ctx),
                    value=None,
                    allow_custom_value=True,
                    elem_id="lab-pool",
                )
                with gr.Row():
                    demos = gr.Radio(list(DEMO_MODES), value="none", label="Demonstrations", elem_id="lab-demos")
                    k = gr.Number(value=3, precision=0, label="k", minimum=0, elem_id="lab-k")
                    seed = gr.Number(value=0, precision=0, label="seed (random)", elem_id="lab-seed")
                hand = gr.Textbox(label="Hand-picked pool numbers (for 'hand')", placeholder="0, 3, 5", elem_id="lab-hand")
                with gr.Row():
                    cot = gr.Radio(list(COT_MODES), value="none", label="Chain-of-thought", elem_id="lab-cot")
                    trigger = gr.Textbox(value="Let's think step by step.", label="Zero-shot trigger", elem_id="lab-trigger")
                with gr.Row():
                    save_btn = gr.Button("Save template", elem_id="lab-save")
                save_note = gr.Markdown(elem_id="lab-save-note")
                pool_table = gr.DataFrame(
                    label="Pool (numbered for hand-picking)", interactive=False, max_height=260, elem_id="lab-pool-table"
                )
            with gr.Column(scale=3):
                gr.Markdown("### Try it")
                text = gr.Textbox(label="Input", lines=3, elem_id="lab-input")
                variant_rows = []
                for i in range(VARIANTS):
                    with gr.Row():
                        vt = gr.Dropdown(
                            label=f"Variant {i + 1}: template",
                            choices=[EDITOR, *template_names(ctx.store)],
                            value=EDITOR if i == 0 else None,
                            elem_id=f"lab-v{i}-template",
                        )
                        vm = gr.Dropdown(
                            label="model",
                            choices=ctx.registry.names("causal-lm"),
                            value=DEFAULT_CHAT_MODEL if i == 0 else None,
                            elem_id=f"lab-v{i}-model",
                        )
                    variant_rows.append((vt, vm))
                max_new = gr.Slider(8, 512, value=128, step=8, label="Max new tokens")
                run_btn = gr.Button("Run the variants", variant="primary", elem_id="lab-run")
                with gr.Row():
                    outputs = []
                    thumb_buttons = []
                    for i in range(VARIANTS):
                        with gr.Column(min_width=120):
                            outputs.append(gr.HTML(elem_id=f"lab-out-{i}", elem_classes=["reply-card", "rendered"]))
                            with gr.Row():
                                thumb_buttons += [
                                    (i, d, gr.Button(icon, size="sm", elem_id=f"lab-out-{i}-{d}"))
                                    for d, icon in (("up", "👍"), ("down", "👎"))
                                ]
                thumb_note = gr.Markdown(elem_id="lab-thumb-note")
                with gr.Accordion("The exact prompt of each variant", open=False):
                    prompts_md = gr.HTML(elem_id="lab-prompts", elem_classes="rendered")
                with gr.Row():
                    queue_project = gr.Dropdown(
                        label="Send the outputs to a project's queue",
                        choices=[p.name for p in ctx.store.projects()],
                        value=None,
                        elem_id="lab-queue-project",
                    )
                    queue_btn = gr.Button("Send as candidate replies", elem_id="lab-queue-send")
                queue_note = gr.Markdown(elem_id="lab-queue-note")
        with gr.Accordion("Evaluate the editor's template over a labelled dataset", open=False):
            with gr.Row():
                data = gr.Dropdown(
                    label="Dataset",
                    info="a project, or a file with input and output fields",
                    choices=pool_choices(ctx),
                    value=None,
                    allow_custom_value=True,
                    elem_id="lab-eval-data",
                )
                limit = gr.Number(value=20, precision=0, minimum=1, label="examples", elem_id="lab-eval-limit")
                eval_model = gr.Dropdown(
                    label="Model", choices=ctx.registry.names("causal-lm"), value=DEFAULT_CHAT_MODEL, elem_id="lab-eval-model"
                )
                metric = gr.Radio(["exact", "contains", "reward"], value="contains", label="Metric", elem_id="lab-eval-metric")
                reward_model = gr.Dropdown(
                    label="Reward model (for 'reward')", choices=ctx.registry.names("reward-model"), value=None, elem_id="lab-eval-rm"
                )
            eval_btn = gr.Button("Evaluate", elem_id="lab-eval-run")
            eval_summary = gr.Markdown(elem_id="lab-eval-summary")
            eval_table = gr.DataFrame(interactive=False, wrap=True, elem_id="lab-eval-table")

        editor_inputs = [name, system, template, demos, k, hand, seed, cot, trigger]

        def on_pool(source, request: gr.Request):
            require(ctx.store, request, TRAIN)
            records = load_records(ctx, source, request, limit=500)
            rows = [
                [i, r.get("input") or r.get("instruction") or r.get("prompt") or "", r.get("output") or r.get("response") or ""]
                for i, r in enumerate(records)
            ]
            return pd.DataFrame(rows, columns=["#", "input", "output"])

        def on_run(data: dict, request: gr.Request):
            require(ctx.store, request, TRAIN)
            values = [data[c] for c in run_inputs]
            editor = editor_template(*values[:9])
            pool_records = load_records(ctx, values[9], request, limit=500)
            text_value, max_tokens = values[10], int(values[11])
            pairs = [(values[12 + 2 * i], values[13 + 2 * i]) for i in range(VARIANTS)]
            found = run_variants(ctx, editor, pool_records, text_value, pairs, max_tokens)
            # Rendered on the server (shown in gr.HTML): model output and prompts are text, never markup.
            heads = [f"<p><strong>{plain_text(label)}</strong> · {plain_text(model)}</p>" for label, model, _, _ in found]
            bodies = [markdown_html(out) if out.strip() else "<p><em>(empty)</em></p>" for *_, out in found]
            cards = [head + body for head, body in zip(heads, bodies, strict=True)]
            cards += [""] * (VARIANTS - len(cards))
            shown = "<hr>".join(head + conversation_html(msgs) for head, (_, _, msgs, _) in zip(heads, found, strict=True))
            return [*cards, shown, shown_results(found, text_value, max_tokens)]

        def on_save(name_, system_, template_, demos_, k_, hand_, seed_, cot_, trigger_, request: gr.Request):
            require(ctx.store, request, WRITE_CONTENT)
            t = editor_template(name_, system_, template_, demos_, k_, hand_, seed_, cot_, trigger_)
            try:
                save_template(ctx.store, t.name, t.as_dict())
            except StoreError as exc:
                raise UserError(str(exc)) from exc
            names = template_names(ctx.store)
            return (
                f"Saved **{html.escape(t.name)}**.",
                gr.update(choices=names),
                *[gr.update(choices=[EDITOR, *names]) for _ in range(VARIANTS)],
            )

        def on_load_template(chosen, request: gr.Request):
            require(ctx.store, request, TRAIN)
            if not chosen or chosen not in template_names(ctx.store):
                return [gr.skip()] * 8
            t = _saved(ctx, chosen)
            return [t.system, t.template, t.demos, t.k, ", ".join(map(str, t.hand_picked)), t.seed, t.cot, t.cot_trigger]

        def on_evaluate(data: dict, request: gr.Request):
            require(ctx.store, request, TRAIN)
            values = [data[c] for c in eval_inputs]
            editor = editor_template(*values[:9])
            pool_records = load_records(ctx, values[9], request, limit=500)
            dataset = load_records(ctx, values[10], request, limit=int(values[11] or 20))
            return evaluate_template(ctx, editor, pool_records, dataset, values[12], values[13], values[14], int(values[15]))

        def on_send(project, text_value, state, request: gr.Request):
            return send_outputs(ctx, project, text_value or "", state or [], request)

        def on_refresh(request: gr.Request):
            # Every logged-in page loads this screen (hidden for annotators): they get nothing.
            if may(ctx.store, request, TRAIN) is None:
                return [gr.skip()] * len(refresh_outputs)
            names = template_names(ctx.store)
            projects = [p.name for p in ctx.store.projects()]
            return (
                gr.update(choices=names),
                gr.update(choices=pool_choices(ctx)),
                gr.update(choices=pool_choices(ctx)),
                gr.update(choices=projects),
                gr.update(choices=ctx.registry.names("reward-model")),
                *[gr.update(choices=[EDITOR, *names]) for _ in range(VARIANTS)],
                *[gr.update(choices=ctx.registry.names("causal-lm")) for _ in range(VARIANTS)],
            )

        variant_inputs = [c for pair in variant_rows for c in pair]
        pool.change(on_pool, pool, pool_table, api_name=False)
        # Inputs as a set: the handler gets a dict, and Gradio still passes the request.
        run_inputs = [*editor_inputs, pool, text, max_new, *variant_inputs]
        run_btn.click(on_run, set(run_inputs), [*outputs, prompts_md, results_state], api_name="run_variants")
        save_btn.click(on_save, editor_inputs, [save_note, name, *[vt for vt, _ in variant_rows]], api_name="save_template")
        name.select(on_load_template, name, [system, template, demos, k, hand, seed, cot, trigger], api_name=False)
        eval_inputs = [*editor_inputs, pool, data, limit, eval_model, metric, reward_model, max_new]
        eval_btn.click(on_evaluate, set(eval_inputs), [eval_summary, eval_table], api_name="evaluate_template")

        def thumber(index: int, direction: str):
            def on_thumb(state, request: gr.Request):
                return thumb_output(ctx, state, index, direction, request)

            return on_thumb

        for i, direction, btn in thumb_buttons:
            btn.click(thumber(i, direction), results_state, thumb_note, api_name=f"lab_thumb_{i}_{direction}")
        queue_btn.click(on_send, [queue_project, text, results_state], queue_note, api_name="send_lab_outputs")
        refresh_outputs = [name, pool, data, queue_project, reward_model, *[vt for vt, _ in variant_rows], *[vm for _, vm in variant_rows]]
        screen.load(on_refresh, None, refresh_outputs, api_name=False)
    return screen


if __name__ == "__main__":
    from studio.app import standalone

    standalone(build)
