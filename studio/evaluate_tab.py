"""The "Evaluate" screen (admins): did each tier make the model better, and what did it cost?

Three parts:

- **Leaderboard**: arena ratings from blind votes (Bradley-Terry with bootstrap intervals), the
  pairwise win-rate matrix, the automatic judged results beside them, and "Export votes as
  preference pairs": the votes become a snapshot that trains the next reward model or DPO run.
- **Levels board**: every model by tier (L1 prompted, L2 instruction-tuned, L3 PPO / RLAIF / DPO)
  with its cost and its quality, as a table and a chart.
- **Judged comparisons**: launch ``eval`` runs (the same as ``rlhf-studio eval compare``), watch
  them, read their results and replies.

Run alone: ``python -m studio.evaluate_tab``.
"""

from __future__ import annotations

import gradio as gr

from annotations.arena import export_preference_pairs
from annotations.store import StoreError
from rlhf.config import ConfigError
from rlhf.modelfiles import ModelError
from rlhf.registry import DEFAULT_CHAT_MODEL
from studio import judged
from studio.context import StudioContext
from studio.leaderboard import arena_board, judged_board, levels_board
from studio.permissions import READ_RESULTS, TRAIN, WRITE_CONTENT, allowed, current_user, require
from studio.render import UserError, plain_text
from studio.run_monitor import Chart, build_monitor
from studio.training_screen import project_choices

CHARTS = (Chart("Progress (prompts generated and judged)", ("step",)),)
METRICS = ("best", "win_rate", "win_rate_low", "win_rate_high", "lc_win_rate", "mean_words", "baseline_mean_words", "warnings")


def refresh_boards(ctx: StudioContext, request: gr.Request | None):
    require(ctx.store, request, READ_RESULTS)
    board = arena_board(ctx)
    levels, levels_chart = levels_board(ctx, board)
    from studio.leaderboard import PROVISIONAL_BATTLES, plural

    note = (
        f"{plural(board.battles, 'arena vote')}. Ratings on the Elo scale"
        + (f", {DEFAULT_CHAT_MODEL} fixed at 1000" if any(r.model == DEFAULT_CHAT_MODEL for r in board.ratings) else ", mean 1000")
        + "; an interval that overlaps another's means the order of the two is not settled yet. "
        + f"With fewer than {PROVISIONAL_BATTLES} battles a rating is provisional: its interval would say little."
    )
    return note, board.frame, board.chart, board.matrix, judged_board(ctx), levels, levels_chart


def export_votes(ctx: StudioContext, include_ties: bool, request: gr.Request | None) -> str:
    require(ctx.store, request, WRITE_CONTENT)
    try:
        info = export_preference_pairs(ctx.store, ctx.snapshot_root, include_ties=bool(include_ties))
    except (StoreError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    counts = ", ".join(f"{k} {v}" for k, v in info.counts.items() if isinstance(v, int))
    again = " (the same votes were exported before; that snapshot is reused)" if info.reused else ""
    return f"Snapshot **{plain_text(info.id)}**{again}: {plain_text(counts)}. Choose it as the data of a reward model or DPO run."


def build(ctx: StudioContext) -> gr.Blocks:
    with gr.Blocks() as screen:
        gr.Markdown(
            "A training reward is not quality. Here each model is judged by something it was not trained against: "
            "blind votes in the Arena, and automatic comparisons with a reward model trained on other data or an AI judge "
            "asked in both orders. Every win rate comes with its interval and the reply lengths."
        )
        with gr.Tabs():
            with gr.Tab("Leaderboard", id="eval-leaderboard"):
                board_note = gr.Markdown(elem_id="eval-board-note")
                arena_table = gr.DataFrame(label="Arena (blind human votes)", interactive=False, elem_id="eval-arena-table")
                with gr.Row():
                    arena_chart = gr.HTML(elem_id="eval-arena-chart")
                    arena_matrix = gr.HTML(elem_id="eval-arena-matrix")
                judged_table = gr.DataFrame(
                    label="Automatic judged comparisons (newest eval run per contender)", interactive=False, elem_id="eval-judged-table"
                )
                with gr.Row():
                    refresh_btn = gr.Button("Refresh", elem_id="eval-refresh")
                    include_ties = gr.Checkbox(label="Keep ties (as pairs with margin 0)", value=False, elem_id="eval-export-ties")
                    export_btn = gr.Button("Export votes as preference pairs", elem_id="eval-export")
                export_note = gr.Markdown(elem_id="eval-export-note")
            with gr.Tab("Levels board", id="eval-levels"):
                gr.Markdown(
                    "Each step up the ladder, what it bought and what it cost: **L1** prompting the base model (templates, "
                    "few-shot, chain-of-thought), **L2** instruction tuning, **L3** alignment (reward model + PPO, RLAIF, DPO)."
                )
                levels_table = gr.DataFrame(interactive=False, elem_id="eval-levels-table")
                levels_chart = gr.HTML(elem_id="eval-levels-chart")
            with gr.Tab("Judged comparisons", id="eval-judged"):
                with gr.Row():
                    with gr.Column(scale=2):
                        contenders = gr.Dropdown(label="Contenders", multiselect=True, choices=[], elem_id="eval-contenders")
                        baseline = gr.Dropdown(
                            label="Baseline (default: the first contender)", choices=[], allow_custom_value=True, elem_id="eval-baseline"
                        )
                        with gr.Row():
                            template_model = gr.Dropdown(label="Model for templates", choices=[], elem_id="eval-template-model")
                            pool = gr.Dropdown(
                                label="Demonstration pool (templates with examples)",
                                choices=[],
                                allow_custom_value=True,
                                elem_id="eval-pool",
                            )
                        prompts = gr.Dropdown(
                            label="Held-out prompts",
                            info="a project's prompts, or type the path of a prompts file the models were not trained on",
                            choices=[],
                            allow_custom_value=True,
                            elem_id="eval-prompts",
                        )
                        with gr.Row():
                            judge_type = gr.Radio(
                                label="Judge",
                                choices=list(judged.JUDGE_TYPES),
                                value=next(iter(judged.JUDGE_TYPES)),
                                elem_id="eval-judge-type",
                            )
                            judge_model = gr.Dropdown(label="Judge model", choices=[], elem_id="eval-judge-model")
                        with gr.Row():
                            max_prompts = gr.Number(label="Prompts (0 = all)", value=64, precision=0, elem_id="eval-max-prompts")
                            temperature = gr.Number(label="Temperature", value=0.7, elem_id="eval-temperature")
                            max_new = gr.Number(label="Longest reply (tokens)", value=192, precision=0, elem_id="eval-max-new")
                        launch_btn = gr.Button("Launch comparison", variant="primary", elem_id="eval-launch")
                        with gr.Accordion("Config file and command", open=False):
                            yaml_box = gr.Code(language="yaml", interactive=False, elem_id="eval-yaml")
                            command = gr.Markdown(elem_id="eval-command")
                    with gr.Column(scale=3):
                        monitor = build_monitor(ctx, judged.KIND, CHARTS, METRICS)
                results_note = gr.HTML(elem_id="eval-results-note")
                results_table = gr.DataFrame(
                    value=judged.results_frame(None), label="Results against the baseline", interactive=False, elem_id="eval-results"
                )
                replies = gr.HTML(elem_id="eval-replies")

        board_outputs = [board_note, arena_table, arena_chart, arena_matrix, judged_table, levels_table, levels_chart]
        form = [contenders, baseline, prompts, judge_type, judge_model, max_prompts, temperature, max_new, template_model, pool]

        def args(values: list):
            picked, base, prom, jtype, jmodel, n, temp, new, tmodel, pool_value = values
            settings = {"max_prompts": n, "temperature": temp, "max_new_tokens": new}
            return picked, base, prom, jtype, jmodel, settings, tmodel, pool_value

        def on_refresh(request: gr.Request):
            return refresh_boards(ctx, request)

        def on_export(ties, request: gr.Request):
            return export_votes(ctx, ties, request)

        def on_preview(picked, base, prom, jtype, jmodel, n, temp, new, tmodel, pool_value, request: gr.Request):
            require(ctx.store, request, TRAIN)
            return judged.preview(ctx, *args([picked, base, prom, jtype, jmodel, n, temp, new, tmodel, pool_value]))

        def on_launch(picked, base, prom, jtype, jmodel, n, temp, new, tmodel, pool_value, request: gr.Request):
            require(ctx.store, request, TRAIN)
            try:
                run_id = judged.launch(ctx, *args([picked, base, prom, jtype, jmodel, n, temp, new, tmodel, pool_value]))
            except (ValueError, StoreError, ConfigError, ModelError) as exc:
                raise UserError(str(exc)) from exc
            return gr.Dropdown(choices=[r.id for r in ctx.launcher.runs(judged.KIND)], value=run_id)

        def on_results(run_id, request: gr.Request):
            require(ctx.store, request, TRAIN)
            return judged.show_results(ctx, run_id)

        def on_contenders(picked, tmodel, request: gr.Request):
            require(ctx.store, request, TRAIN)
            labels = []
            for choice in picked or []:
                if choice.startswith(judged.TEMPLATE_PREFIX):
                    labels.append(f"{tmodel or DEFAULT_CHAT_MODEL} + template {choice[len(judged.TEMPLATE_PREFIX) :]}")
                else:
                    labels.append(choice)
            return gr.Dropdown(choices=labels, value=labels[0] if labels else None)

        def on_judge_type(kind, request: gr.Request):
            require(ctx.store, request, TRAIN)
            names = judged.judge_model_choices(ctx, kind)
            return gr.Dropdown(choices=names, value=None)

        def on_load(request: gr.Request):
            user = current_user(ctx.store, request)
            if not allowed(user, TRAIN) or not allowed(user, READ_RESULTS):
                return tuple(gr.skip() for _ in range(len(board_outputs) + 7))
            lm = ctx.registry.names("causal-lm")
            data = [c for c in project_choices(ctx, "prompts")]
            return (
                *refresh_boards(ctx, request),
                gr.Dropdown(choices=judged.contender_choices(ctx)),
                gr.Dropdown(choices=lm, value=DEFAULT_CHAT_MODEL if DEFAULT_CHAT_MODEL in lm else None),
                gr.Dropdown(choices=data),
                gr.Dropdown(choices=data),
                gr.Dropdown(choices=judged.judge_model_choices(ctx, "pairwise")),
                gr.Dropdown(choices=[r.id for r in ctx.launcher.runs(judged.KIND)]),
                gr.Timer(active=True),
            )

        refresh_btn.click(on_refresh, None, board_outputs, api_name="eval_refresh_boards")
        export_btn.click(on_export, include_ties, export_note, api_name="eval_export_votes")
        gr.on([c.change for c in form], on_preview, form, [yaml_box, command], api_name=False, show_progress="hidden")
        launch_btn.click(on_launch, form, monitor.run, api_name="launch_eval_run")
        monitor.run.change(on_results, monitor.run, [results_note, results_table, replies], api_name=False)
        monitor.timer.tick(on_results, monitor.run, [results_note, results_table, replies], api_name=False, show_progress="hidden")
        gr.on([contenders.change, template_model.change], on_contenders, [contenders, template_model], baseline, api_name=False)
        judge_type.change(on_judge_type, judge_type, judge_model, api_name=False)
        screen.load(
            on_load,
            None,
            [*board_outputs, contenders, template_model, prompts, pool, judge_model, monitor.run, monitor.timer],
            api_name=False,
        )
    return screen


if __name__ == "__main__":
    from studio.app import standalone

    standalone(build)
