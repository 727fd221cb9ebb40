"""Turning stored text into safe HTML for the screens.

Replies, prompts, guidelines and rationales come from models, imported files and annotators.
:func:`markdown_html` renders them on the server: Markdown becomes HTML (markdown-it-py, raw
HTML off, so any HTML in the text shows as text), images and links become visible text (their
URL shown, never loaded or followed), and nh3 with a strict allow-list is the final safety net:
no attributes, no URLs, no tags outside :data:`ALLOWED_TAGS`. Show the result in ``gr.HTML``
(with ``elem_classes="rendered"``), never in ``gr.Markdown``, which would interpret it again.

    from studio.render import markdown_html, conversation_html
    gr.HTML(markdown_html(reply_text), elem_classes="rendered")
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

import gradio as gr
import nh3
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

# What rendered text may contain. No attributes at all (so no src, href, style, on*, class, id:
# nothing can load, navigate, restyle the page or borrow the studio's own CSS classes), and no
# tag that embeds, links, submits or styles (a, img, svg, iframe, form, style, meta, base, ...).
ALLOWED_TAGS = frozenset(
    {
        "p", "br", "hr", "strong", "em", "s", "del", "code", "pre", "blockquote", "ul", "ol", "li",
        "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td",
    }
)  # fmt: skip

# The wrapper that markdown_html puts around the sanitised HTML (added after nh3, with fixed
# attributes): the only element with attributes in rendered text.
WRAPPER_CLASS = "md-text"

# Explicit bidi embeddings, overrides and isolates (LRE, RLE, PDF, LRO, RLO, LRI, RLI, FSI, PDI).
# They are invisible and reorder the characters after them ("Trojan Source"): an annotator
# would read a reply in one order while the model wrote, and trains on, another. We show each
# as a visible marker such as [U+202E] rather than drop it silently: what the annotator sees is
# then exactly the logical text, and the marker itself is worth seeing (a reply that emits
# such characters is suspicious). Legitimate right-to-left text (Arabic, Hebrew) needs none of
# them: the wrapper has dir="auto", and an element with a dir attribute is bidi-isolated
# (unicode-bidi: isolate, from the browser's own stylesheet, plus ours), so RTL text and the
# weak marks LRM/RLM/ALM stay inside their reply and cannot reorder the page around it.
# Zero-width characters (ZWSP, ZWNJ, ZWJ, word joiner, BOM) reorder nothing, and ZWJ/ZWNJ are
# needed by emoji sequences and Persian or Indic scripts, so they stay.
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


def _show_bidi_controls(text: str) -> str:
    return _BIDI_CONTROLS.sub(lambda m: f"[U+{ord(m.group()):04X}]", text)


class _TextOnlyLinks(RendererHTML):
    """markdown-it's HTML renderer with links and images turned into visible text.

    A link shows its text and then its URL in brackets; an image shows its alt text and its
    URL: no <a>, no <img>, so nothing is fetched and nothing can be clicked through to.
    """

    def link_open(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        return ""

    def link_close(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        # The matching link_open is the nearest earlier one at the same nesting level.
        depth = 0
        for j in range(idx - 1, -1, -1):
            token = tokens[j]
            if token.type == "link_close":
                depth += 1
            elif token.type == "link_open":
                if depth == 0:
                    href = str(token.attrGet("href") or "")
                    shown = self.renderInlineAsText(tokens[j + 1 : idx], options, env)
                    return "" if not href or shown.strip() == href else f" ({html.escape(href)})"
                depth -= 1
        return ""

    def image(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        token = tokens[idx]
        alt = self.renderInlineAsText(token.children, options, env).strip()
        src = str(token.attrGet("src") or "")
        label = f"[image: {alt}]" if alt else "[image]"
        return html.escape(f"{label} ({src})" if src else label)


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}, renderer_cls=_TextOnlyLinks)
    md.enable(["table", "strikethrough"])
    # With html off these rules already emit text; disabling them too makes it explicit.
    # Autolinks (<http://x>) stay as their literal text.
    md.disable(["html_block", "html_inline", "autolink"])
    return md


_MD = _parser()


def markdown_html(text: str) -> str:
    """Stored text (a reply, prompt, guideline, rationale) as safe HTML, rendered on the server.

    Markdown works (emphasis, lists, headings, code, tables, quotes); raw HTML shows as text;
    links and images show as text with their URL; the result holds only :data:`ALLOWED_TAGS`
    with no attributes, inside one ``<div class="md-text" dir="auto">``.
    """
    body = _MD.render(_show_bidi_controls(text or ""))
    safe = nh3.clean(
        body,
        tags=set(ALLOWED_TAGS),
        clean_content_tags={"script", "style"},
        attributes={},
        url_schemes=set(),
        link_rel=None,
        strip_comments=True,
    )
    return f'<div class="{WRAPPER_CLASS}" dir="auto">{safe}</div>'


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
        # A refusal or a bad value is the user's, not a bug: no traceback in the server log.
        kwargs.setdefault("print_exception", False)
        super().__init__(plain_text(message), **kwargs)


def warn(message: object, duration: float | None = 10) -> None:
    """A warning toast that leaves the screen as it is (text only, like :class:`UserError`)."""
    gr.Warning(plain_text(message), duration=duration)


ROLE_NAMES = {"user": "User", "assistant": "Assistant", "system": "System"}


def conversation_html(messages: list[dict]) -> str:
    """A conversation as turns: each role's label, then its text through :func:`markdown_html`.

    Each turn is its own bidi-isolated block, so one turn's text cannot reorder another's.
    """
    blocks = []
    for m in messages:
        role = plain_text(ROLE_NAMES.get(str(m.get("role", "")), str(m.get("role", ""))))
        content = m.get("content") or ""
        # Gradio's messages may hold a list of parts; only their text is shown.
        text = content if isinstance(content, str) else "\n\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        body = markdown_html(text) if text.strip() else f'<div class="{WRAPPER_CLASS}" dir="auto"><p><em>(empty)</em></p></div>'
        blocks.append(f'<div class="md-turn"><div class="md-role">{role}</div>{body}</div>')
    return f'<div class="md-conversation">{"".join(blocks)}</div>'


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
