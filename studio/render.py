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


def conversation_messages(messages: list[dict]) -> list[dict]:
    """Chat messages for a gr.Chatbot, with HTML neutralised."""
    return [
        {"role": "assistant" if m["role"] == "assistant" else "user", "content": neutralise_html(m["content"])}
        for m in messages
        if m["role"] != "system"
    ]
