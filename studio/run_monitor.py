"""Watching training runs: the runs table, a run's progress, plots, log tail and cancel button.

Shared by every training screen (reward model now; PPO, SFT and DPO use the same parts). All
figures come from the run folder (status.json, events.jsonl, metrics.json, run.log), polled by
a ``gr.Timer``, so a restarted studio shows the runs still going. Failed and lost runs show
their error in the table. Every handler checks the caller may train (``require(..., TRAIN)``).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from rlhf.runs import RunDir
from studio.context import StudioContext
from studio.launcher import RunLauncher
from studio.permissions import TRAIN, require
from studio.render import UserError, line_chart, progress_bar

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colour codes from library loggers


@dataclass(frozen=True)
class Chart:
    title: str
    keys: tuple[str, ...]  # event fields drawn as lines, by step (or by ``x``)
    x: str = "step"  # the event field on the horizontal axis
    x_label: str = "step"
    from_start: bool = False  # each line as its change since its first value, so lines of different scales meet at 0
    only_with: str | None = None  # drawn only once some event has this field (a chart for an optional feature)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def progress(run: RunDir, events: list[dict], state: str) -> tuple[float, str]:
    """(fraction done, caption with step, elapsed and time left)."""
    steps = [e for e in events if isinstance(e.get("step"), int | float) and e.get("max_steps")]
    if state == "finished":
        return 1.0, "finished"
    if not steps:
        return 0.0, "starting: loading the model and the data" if state in ("created", "running") else state
    last = steps[-1]
    fraction = min(1.0, last["step"] / max(1, last["max_steps"]))
    text = f"step {last['step']} of {last['max_steps']}"
    first = steps[0]
    if last["step"] > first["step"] and state == "running":
        per_step = (last["time"] - first["time"]) / (last["step"] - first["step"])
        text += f" · about {_duration(per_step * (last['max_steps'] - last['step']))} left"
    return fraction, text


def _number(value) -> bool:
    return isinstance(value, int | float)


def series(events: list[dict], keys: tuple[str, ...], x: str = "step", from_start: bool = False) -> dict[str, list[tuple[float, float]]]:
    """{key: [(x, y), ...]} from the events that have both; ``from_start``: y less the key's first value."""
    out: dict[str, list[tuple[float, float]]] = {}
    for key in keys:
        pts = [(float(e[x]), float(e[key])) for e in events if _number(e.get(key)) and _number(e.get(x)) and "step" in e]
        if pts and from_start:
            pts = [(px, py - pts[0][1]) for px, py in pts]
        if pts:
            out[f"{key} - start" if from_start else key] = pts
    return out


def charts_html(events: list[dict], charts: tuple[Chart, ...]) -> str:
    """Every chart of a run; a chart with ``only_with`` only when some event has that field."""
    drawn = []
    for chart in charts:
        if chart.only_with and not any(_number(e.get(chart.only_with)) for e in events):
            continue
        drawn.append(line_chart(chart.title, series(events, chart.keys, chart.x, chart.from_start), x_label=chart.x_label))
    return '<div class="run-plots">' + "".join(drawn) + "</div>"


def runs_frame(launcher: RunLauncher, kind: str, metric_keys: tuple[str, ...]) -> pd.DataFrame:
    rows = []
    for run in launcher.runs(kind):
        status, metrics = run.status(), run.metrics()
        state = launcher.state(run)
        last = run.last_event() or {}
        step = f"{last['step']}/{last['max_steps']}" if last.get("max_steps") else str(last.get("step", ""))
        shown = [_fmt(metrics.get(k)) for k in metric_keys]
        error = state.error if state.state in ("failed", "lost", "cancelled") else ""
        error = error if len(error) <= 200 else error[:199] + "…"
        rows.append([run.id, state.state, step, *shown, metrics.get("registered_as", ""), status.get("created", ""), error])
    return pd.DataFrame(rows, columns=["run", "state", "step", *metric_keys, "registered as", "created", "error"])


def run_detail(launcher: RunLauncher, run_id: str | None, charts: tuple[Chart, ...]) -> tuple[str, str, str, str, bool]:
    """(summary Markdown, progress bar, charts HTML, log tail, can cancel) for one run."""
    if not run_id:
        return "Choose a run, or launch one.", "", "", "", False
    try:
        run = launcher.get(run_id)
    except ValueError as exc:
        return html.escape(str(exc)), "", "", "", False
    state = launcher.state(run)
    status, events, metrics = run.status(), run.events(), run.metrics()
    fraction, caption = progress(run, events, state.state)
    lines = [f"**{run.id}**: {state.state}" + (" (running)" if state.alive and state.state != "running" else "")]
    lines.append(f"Folder `{run.path}`")
    if state.error:
        lines.append(f"**Error:** {html.escape(state.error)}")
    if metrics:
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items() if k != "stopped_early")
        lines.append(f"Metrics: {html.escape(shown)}")
    if status.get("traceback"):
        lines.append("<details><summary>Traceback</summary>\n\n```\n" + status["traceback"][-3000:] + "\n```\n</details>")
    plots = charts_html(events, charts)
    bar = progress_bar(fraction, caption, failed=state.state in ("failed", "lost"))
    return "\n\n".join(lines), bar, plots, ANSI.sub("", run.tail_log(40)), state.alive


def run_choices(launcher: RunLauncher, kind: str) -> list[str]:
    return [r.id for r in launcher.runs(kind)]


@dataclass
class Monitor:
    """The components of a run monitor, for screens that need to update them."""

    run: gr.Dropdown
    table: gr.DataFrame
    timer: gr.Timer  # starts inactive: the screen switches it on for admins only


def build_monitor(ctx: StudioContext, kind: str, charts: tuple[Chart, ...], metric_keys: tuple[str, ...]) -> Monitor:
    """The runs table and the selected run's detail, polled every 2 s."""
    empty = pd.DataFrame([], columns=["run", "state", "step", *metric_keys, "registered as", "created", "error"])
    table = gr.DataFrame(value=empty, label="Runs", interactive=False, elem_id=f"{kind}-runs")
    with gr.Row():
        run = gr.Dropdown(label="Run", choices=[], allow_custom_value=True, elem_id=f"{kind}-run", scale=3)
        cancel = gr.Button("Cancel run", variant="stop", interactive=False, elem_id=f"{kind}-cancel", scale=1)
    summary = gr.Markdown(elem_id=f"{kind}-summary")
    bar = gr.HTML(elem_id=f"{kind}-progress")
    plots = gr.HTML(elem_id=f"{kind}-plots")
    log = gr.Code(label="Log (last 40 lines)", language=None, interactive=False, elem_id=f"{kind}-log")
    cancel_note = gr.Markdown()
    timer = gr.Timer(2.0, active=False)

    def detail(run_id, request: gr.Request):
        require(ctx.store, request, TRAIN)
        text, progress_html, plots_html, tail, alive = run_detail(ctx.launcher, run_id, charts)
        return text, progress_html, plots_html, tail, gr.Button(interactive=alive)

    def tick(run_id, request: gr.Request):
        require(ctx.store, request, TRAIN)
        frame = runs_frame(ctx.launcher, kind, metric_keys)
        return (frame, *detail(run_id, request))

    def on_cancel(run_id, request: gr.Request):
        require(ctx.store, request, TRAIN)
        try:
            return ctx.launcher.cancel(run_id or "")
        except ValueError as exc:
            raise UserError(str(exc)) from exc

    def refresh_choices(run_id, request: gr.Request):
        require(ctx.store, request, TRAIN)
        ids = run_choices(ctx.launcher, kind)
        return gr.Dropdown(choices=ids, value=run_id if run_id in ids else (ids[0] if ids else None))

    detail_outputs = [summary, bar, plots, log, cancel]
    timer.tick(tick, run, [table, *detail_outputs], api_name=False, show_progress="hidden")
    run.change(detail, run, detail_outputs, api_name=False)
    run.focus(refresh_choices, run, run, api_name=False)
    cancel.click(on_cancel, run, cancel_note, api_name=f"cancel_{kind}_run")
    return Monitor(run=run, table=table, timer=timer)
