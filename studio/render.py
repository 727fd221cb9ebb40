"""Turning stored text into safe Markdown for the screens.

Replies and prompts come from models and imported files: any raw HTML in them is shown as
text, never rendered (no <script>, no <img onerror>, no layout-breaking tags), while Markdown
and code keep working.
"""

from __future__ import annotations

import re

# Fenced blocks and inline code spans keep their text untouched: Markdown shows them literally.
_CODE = re.compile(r"(```.*?```|~~~.*?~~~|`[^`\n]*`)", re.S)


def neutralise_html(text: str) -> str:
    """Escape HTML outside code so Markdown shows it as text."""
    parts = _CODE.split(text or "")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "".join(parts)


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
