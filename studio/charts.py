"""Evaluation pictures as inline SVG: ratings with intervals, and a pairwise win-rate matrix.

Plain SVG built on the server (no plotting library, no JavaScript), every label escaped, so a
model name cannot inject markup. Shown in ``gr.HTML``.

    interval_chart("Arena rating", [("base", 1000, 960, 1040, "L1"), ...])
    heatmap("Win rate of row against column", models, wins, counts)
"""

from __future__ import annotations

import html
import math

import numpy as np

TIER_COLOURS = {"L1": "#0891b2", "L2": "#d97706", "L3": "#4f46e5", "": "#64748b"}


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float) -> str:
    """Ratings as whole numbers, rates with three digits; never scientific notation."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def interval_chart(title: str, rows: list[tuple[str, float, float, float, str]], reference: float | None = None, unit: str = "") -> str:
    """One row per model: a dot at the value and a whisker from low to high, coloured by tier."""
    if not rows:
        return f'<div class="eval-chart"><div class="bar-title">{_esc(title)}</div><div class="bar-empty">nothing yet</div></div>'
    lows = [r[2] for r in rows] + ([reference] if reference is not None else [])
    highs = [r[3] for r in rows] + ([reference] if reference is not None else [])
    lo, hi = min(lows), max(highs)
    pad = (hi - lo) * 0.08 or 1.0
    lo, hi = lo - pad, hi + pad
    label_w, width, row_h, top = 230, 640, 26, 10
    plot_w = width - label_w - 90
    height = top + row_h * len(rows) + 28

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * plot_w

    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{_esc(title)}" class="interval-chart">']
    if reference is not None:
        parts.append(
            f'<line x1="{x(reference):.1f}" y1="{top}" x2="{x(reference):.1f}" y2="{height - 24}" stroke="#94a3b8" stroke-dasharray="4 3"/>'
        )
    for i, (label, value, low, high, tier) in enumerate(rows):
        y = top + row_h * i + row_h / 2
        colour = TIER_COLOURS.get(tier[:2], TIER_COLOURS[""])
        short = label if len(label) <= 34 else label[:33] + "…"
        parts.append(f'<text x="{label_w - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="12" fill="currentColor">{_esc(short)}</text>')
        parts.append(
            f'<line x1="{x(low):.1f}" y1="{y:.1f}" x2="{x(high):.1f}" y2="{y:.1f}" '
            f'stroke="{colour}" stroke-width="3" stroke-linecap="round"/>'
        )
        parts.append(f'<circle cx="{x(value):.1f}" cy="{y:.1f}" r="5" fill="{colour}"/>')
        parts.append(f'<text x="{width - 84}" y="{y + 4:.1f}" font-size="12" fill="currentColor">{_num(value)}{_esc(unit)}</text>')
    for v in np.linspace(lo, hi, 5):
        parts.append(f'<text x="{x(v):.1f}" y="{height - 8}" text-anchor="middle" font-size="11" fill="#64748b">{_num(v)}</text>')
    parts.append("</svg>")
    legend = " ".join(
        f'<span style="color:{c}">●</span> {_esc(name)}'
        for name, c in (
            ("L1 prompting (base or prompted)", TIER_COLOURS["L1"]),
            ("L2 instruction tuning", TIER_COLOURS["L2"]),
            ("L3 alignment", TIER_COLOURS["L3"]),
        )
    )
    return (
        f'<div class="eval-chart"><div class="bar-title">{_esc(title)}</div>{"".join(parts)}<div class="chart-legend">{legend}</div></div>'
    )


def _cell_colour(value: float) -> str:
    """Red (row loses) through white to blue (row wins)."""
    if math.isnan(value):
        return "#f1f5f9"
    t = max(-1.0, min(1.0, (value - 0.5) * 2))
    if t >= 0:
        r, g, b = (int(255 - t * (255 - c)) for c in (79, 70, 229))
    else:
        r, g, b = (int(255 + t * (255 - c)) for c in (225, 29, 72))
    return f"rgb({r},{g},{b})"


def heatmap(title: str, models: list[str], wins: np.ndarray, counts: np.ndarray) -> str:
    """The pairwise win-rate matrix: cell (row, column) = share of their battles the row won (ties half)."""
    n = len(models)
    if n < 2:
        empty = '<div class="bar-empty">needs battles between two models</div>'
        return f'<div class="eval-chart"><div class="bar-title">{_esc(title)}</div>{empty}</div>'
    cell, label_w, top = 54, 200, 110
    # the rotated column labels reach up and to the right of their column: leave room for the last
    width, height = label_w + cell * n + 110, top + cell * n + 10
    parts = [
        f'<svg viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px" role="img" '
        f'aria-label="{_esc(title)}" class="heatmap">'
    ]
    for j, name in enumerate(models):
        short = name if len(name) <= 22 else name[:21] + "…"
        cx = label_w + cell * j + cell / 2
        parts.append(f'<text transform="translate({cx:.1f},{top - 6}) rotate(-40)" font-size="11" fill="currentColor">{_esc(short)}</text>')
    for i, name in enumerate(models):
        short = name if len(name) <= 28 else name[:27] + "…"
        y = top + cell * i
        parts.append(
            f'<text x="{label_w - 6}" y="{y + cell / 2 + 4:.1f}" text-anchor="end" font-size="11" fill="currentColor">{_esc(short)}</text>'
        )
        for j in range(n):
            value = float(wins[i, j])
            x = label_w + cell * j
            parts.append(f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" rx="4" fill="{_cell_colour(value)}"/>')
            if i != j and not math.isnan(value):
                ink = "#ffffff" if abs(value - 0.5) > 0.3 else "#0f172a"
                parts.append(
                    f'<text x="{x + cell / 2 - 1:.1f}" y="{y + cell / 2:.1f}" text-anchor="middle" font-size="12" '
                    f'fill="{ink}">{value:.2f}</text>'
                    f'<text x="{x + cell / 2 - 1:.1f}" y="{y + cell / 2 + 13:.1f}" text-anchor="middle" font-size="9" '
                    f'fill="{ink}">n={int(counts[i, j])}</text>'
                )
    parts.append("</svg>")
    return f'<div class="eval-chart"><div class="bar-title">{_esc(title)}</div>{"".join(parts)}</div>'
