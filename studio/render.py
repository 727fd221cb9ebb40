"""Turning stored text into safe Markdown for the screens.

Replies and prompts come from models and imported files: any raw HTML in them is shown as
text, never rendered (no <script>, no <img onerror>, no layout-breaking tags), while Markdown
and code keep working.
"""

from __future__ import annotations

import html
import re

import gradio as gr
import nh3

# Fenced blocks and inline code spans keep their text untouched: Markdown shows them literally.
_CODE = re.compile(r"(```.*?```|~~~.*?~~~|`[^`\n]*`)", re.S)


def neutralise_html(text: str) -> str:
    """Escape HTML outside code so Markdown shows it as text."""
    parts = _CODE.split(text or "")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "".join(parts)


def plain_text(text: object) -> str:
    """Any text as inert HTML: every character shown as itself, nothing interpreted.

    Escaping (not sanitising) is right for text that should never contain markup: names,
    error messages, labels.
    """
    return html.escape(str(text), quote=False)


class UserError(gr.Error):
    """A gr.Error whose message is shown as text: names and values in it never become HTML.

    Gradio renders a toast's message as HTML, so a project called ``<img src=...>`` would
    otherwise load a picture in the admin's browser.
    """

    def __init__(self, message: object, **kwargs) -> None:
        super().__init__(plain_text(message), **kwargs)


def warn(message: object, duration: float | None = 10) -> None:
    """A warning toast that leaves the screen as it is (text only, like :class:`UserError`)."""
    gr.Warning(plain_text(message), duration=duration)


ROLE_NAMES = {"user": "User", "assistant": "Assistant", "system": "System"}


def conversation_markdown(messages: list[dict]) -> str:
    """A conversation as Markdown turns, HTML neutralised; the last user turn is the question."""
    blocks = []
    for m in messages:
        body = neutralise_html(m["content"]).strip() or "*(empty)*"
        quoted = "\n".join(f"> {line}" if line else ">" for line in body.splitlines())
        blocks.append(f"**{ROLE_NAMES.get(m['role'], m['role'])}**\n\n{quoted}")
    return "\n\n".join(blocks)


def bar_chart(title: str, rows: list[tuple[str, float | None, str]], maximum: float | None = None) -> str:
    """A horizontal bar chart in plain HTML: (label, value, text shown) per row.

    Plain HTML, not a plotting component: it renders the same with one row or all zeros, and
    needs no JavaScript. Labels and texts are escaped.
    """
    import html as _html

    values = [v for _, v, _ in rows if v is not None]
    top = maximum if maximum is not None else max(values, default=0) or 1
    lines = [f'<div class="bar-chart"><div class="bar-title">{_html.escape(title)}</div>']
    if not rows:
        lines.append('<div class="bar-empty">nothing yet</div>')
    for label, value, text in rows:
        width = 0 if value is None or top <= 0 else max(0.0, min(100.0, 100 * value / top))
        lines.append(
            f'<div class="bar-row"><span class="bar-label">{_html.escape(label)}</span>'
            f'<span class="bar-track"><span class="bar-fill" style="width:{width:.1f}%"></span></span>'
            f'<span class="bar-text">{_html.escape(text)}</span></div>'
        )
    lines.append("</div>")
    return "".join(lines)


SERIES_COLOURS = ("#4f46e5", "#e11d48", "#059669", "#d97706", "#0891b2", "#7c3aed")


def _tick(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], x_label: str = "step", width: int = 460, height: int = 200) -> str:
    """Lines as an inline SVG: {name: [(x, y), ...]}. Empty or single-point series still render.

    Plain SVG rather than a plotting component: it redraws from the run's events on every poll
    without client-side state, and looks the same in screenshots and tests.
    """
    import html as _html
    import math

    points = [(x, y) for pts in series.values() for x, y in pts if math.isfinite(x) and math.isfinite(y)]
    head = f'<div class="line-chart"><div class="bar-title">{_html.escape(title)}</div>'
    if not points:
        return head + '<div class="bar-empty">no data yet</div></div>'
    left, right, top, bottom = 52, 10, 8, 26
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - (abs(y0) * 0.1 or 1), y1 + (abs(y1) * 0.1 or 1)
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{_html.escape(title)}" '
        'style="max-width:100%;font-size:11px;font-family:sans-serif">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#d4d4d8"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        y = y0 + frac * (y1 - y0)
        parts.append(f'<text x="{left - 4}" y="{sy(y) + 4:.1f}" text-anchor="end" fill="#71717a">{_tick(y)}</text>')
    for x in (x0, x1):
        parts.append(f'<text x="{sx(x):.1f}" y="{height - 8}" text-anchor="middle" fill="#71717a">{_tick(x)}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle" fill="#a1a1aa">{_html.escape(x_label)}</text>')
    legend = []
    for i, (name, pts) in enumerate(series.items()):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        clean = [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
        if len(clean) == 1:
            parts.append(f'<circle cx="{sx(clean[0][0]):.1f}" cy="{sy(clean[0][1]):.1f}" r="3" fill="{colour}"/>')
        elif clean:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in clean)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        legend.append(f'<span style="color:{colour}">&#9632; {_html.escape(name)}</span>')
    parts.append("</svg>")
    return head + "".join(parts) + f'<div class="chart-legend">{" &nbsp; ".join(legend)}</div></div>'


def progress_bar(fraction: float, text: str, failed: bool = False) -> str:
    """A progress bar with a caption (escaped)."""
    import html as _html

    pct = max(0.0, min(100.0, 100 * fraction))
    colour = "var(--error-text-color)" if failed else "var(--color-accent)"
    return (
        '<div class="job-bar" style="background:var(--neutral-200);border-radius:6px;height:14px;width:100%">'
        f'<div style="width:{pct:.1f}%;background:{colour};height:14px;border-radius:6px"></div></div>'
        f'<p class="job-summary">{_html.escape(text)}</p>'
    )
