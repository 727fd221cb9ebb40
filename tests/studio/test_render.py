"""Server-side rendering of stored text (studio.render.markdown_html / conversation_html).

Every hostile string of tests/hostile.py must come out as allow-listed tags with no attributes
(no src, href, style, on*), while ordinary Markdown still renders.
"""

from __future__ import annotations

import pytest

from studio import render
from studio.render import ALLOWED_TAGS, conversation_html, markdown_html
from tests.hostile import ALLOWED_TAGS as TEST_ALLOWED_TAGS
from tests.hostile import HOSTILE, ORDINARY, check_rendered_html, parse, visible_text


def test_the_allow_list_is_the_one_the_tests_check() -> None:
    assert set(ALLOWED_TAGS) == TEST_ALLOWED_TAGS
    assert not {"a", "img", "svg", "iframe", "style", "script", "form", "input", "base", "meta", "link", "div", "span"} & ALLOWED_TAGS


@pytest.mark.parametrize("text", [t for _, t in HOSTILE], ids=[n for n, _ in HOSTILE])
def test_hostile_text_renders_inert(text: str) -> None:
    out = markdown_html(text)
    assert check_rendered_html(out) == []
    # Belt and braces beside the parser: no raw "<" of a dangerous tag survives at all (as text
    # it is escaped to &lt;, so "onerror=" in the visible text is harmless and allowed).
    lowered = out.lower()
    for needle in ("<img", "<a ", "<svg", "<iframe", "<script", "<style", "<form", "<meta", "<base", "<link", "<object", "<embed"):
        assert needle not in lowered, needle


@pytest.mark.parametrize("text", [t for _, t in HOSTILE], ids=[n for n, _ in HOSTILE])
def test_hostile_text_in_a_conversation(text: str) -> None:
    out = conversation_html([{"role": "system", "content": text}, {"role": "user", "content": text}, {"role": text, "content": text}])
    assert check_rendered_html(out) == []


@pytest.mark.parametrize(("text", "tag"), ORDINARY)
def test_ordinary_markdown_still_renders(text: str, tag: str) -> None:
    out = markdown_html(text)
    assert check_rendered_html(out) == []
    assert tag in {t for t, _ in parse(out).elements}


def test_raw_html_and_code_show_as_text() -> None:
    assert visible_text(markdown_html("<b>x</b> `<i>y</i>`")).strip() == "<b>x</b> <i>y</i>"
    code = "```html\n<script>alert(1)</script>\n  indented & < >\n```"
    assert "<script>alert(1)</script>\n  indented & < >" in visible_text(markdown_html(code))
    # Escaped backticks are not code: the tag in between is text, and so are the backticks.
    assert visible_text(markdown_html("\\`<img src=x>\\`")).strip() == "`<img src=x>`"
    # Entities are text too: "&lt;img&gt;" reads "<img>", and never becomes a tag.
    assert visible_text(markdown_html("&lt;img&gt; &#60;script&#62;")).strip() == "<img> <script>"


def test_links_and_images_become_their_text_and_url() -> None:
    assert visible_text(markdown_html("[the bank](https://evil.invalid/x)")).strip() == "the bank (https://evil.invalid/x)"
    assert visible_text(markdown_html("![a cat](https://evil.invalid/cat.png)")).strip() == "[image: a cat] (https://evil.invalid/cat.png)"
    assert visible_text(markdown_html("![](https://evil.invalid/p.png)")).strip() == "[image] (https://evil.invalid/p.png)"
    ref = "[docs][d]\n\n[d]: https://evil.invalid/docs"
    assert visible_text(markdown_html(ref)).strip() == "docs (https://evil.invalid/docs)"
    # A link whose text is its URL shows it once; autolinks stay literal text.
    assert visible_text(markdown_html("[https://x.invalid/](https://x.invalid/)")).strip() == "https://x.invalid/"
    assert visible_text(markdown_html("<https://x.invalid/>")).strip() == "<https://x.invalid/>"
    # Inline markup inside link text keeps rendering.
    assert "strong" in {t for t, _ in parse(markdown_html("[**b**](https://x.invalid/)")).elements}


def test_bidi_controls_show_as_markers_and_zero_width_characters_stay() -> None:
    text = visible_text(markdown_html("Total \u202e0001$\u202c ok \u2067x\u2069"))
    assert "[U+202E]0001$[U+202C]" in text and "[U+2067]x[U+2069]" in text
    assert not any(0x202A <= ord(c) <= 0x202E or 0x2066 <= ord(c) <= 0x2069 for c in text)
    family = "👨\u200d👩\u200d👧"
    assert family in visible_text(markdown_html(family))
    # Each rendered text is its own direction-isolated block.
    assert markdown_html("x").startswith('<div class="md-text" dir="auto">')


def test_the_sanitiser_is_the_last_word(monkeypatch: pytest.MonkeyPatch) -> None:
    # Even if the Markdown step emitted markup it should not, nh3 leaves only the allow-list.
    sneaky = '<p style="x" onclick="y"><a href="https://evil.invalid">a</a><img src="https://evil.invalid/i.png"><script>s()</script></p>'
    monkeypatch.setattr(render._MD, "render", lambda text: sneaky)
    out = markdown_html("anything")
    assert check_rendered_html(out) == []
    assert visible_text(out) == "a"


def test_conversation_turns() -> None:
    turns = [
        {"role": "system", "content": "Be <b>brief</b>."},
        {"role": "user", "content": "Hi **there**"},
        {"role": "assistant", "content": ""},
    ]
    out = conversation_html(turns)
    assert check_rendered_html(out) == []
    text = visible_text(out)
    assert "System" in text and "User" in text and "Assistant" in text and "(empty)" in text
    assert "Be <b>brief</b>." in text
    assert "strong" in {t for t, _ in parse(out).elements}
    assert out.count('class="md-turn"') == 3
    parts = conversation_html([{"role": "user", "content": [{"type": "text", "text": "<img src=x> **hi**"}]}])
    assert check_rendered_html(parts) == [] and "<img src=x> hi" in visible_text(parts)


def test_the_other_helpers_still_escape() -> None:
    assert render.plain_text("<img src=x>") == "&lt;img src=x&gt;"
    assert "&lt;b&gt;" in render.bar_chart("t", [("<b>", 1.0, "<i>")])
    assert "&lt;x&gt;" in render.progress_bar(0.5, "<x>")


def test_the_chat_shows_server_rendered_text_and_keeps_the_raw_history(ctx) -> None:
    import gradio as gr

    from studio import chat

    raw = [
        {"role": "user", "content": [{"type": "text", "text": "Show me ![x](https://evil.invalid/p.png)"}]},
        {"role": "assistant", "content": "<img src=https://evil.invalid/q.png> [login](https://evil.invalid/) **ok**"},
    ]
    shown = chat.chat_display(raw)
    assert [m["role"] for m in shown] == ["user", "assistant"]
    for message in shown:
        assert check_rendered_html(message["content"]) == []
    assert "strong" in {t for t, _ in parse(shown[1]["content"]).elements}
    assert "login (https://evil.invalid/)" in visible_text(shown[1]["content"])
    assert raw[1]["content"].startswith("<img")  # the model's history is left as it was

    # The Chatbot shows that HTML as is (no Markdown or LaTeX pass in the browser, Gradio's
    # sanitiser still on); the raw history the model reads is a server-side gr.State.
    screen = chat.build(ctx)
    [bot] = [b for b in screen.blocks.values() if isinstance(b, gr.Chatbot)]
    assert bot.render_markdown is False and bot.sanitize_html is True and bot.latex_delimiters == []
    assert "copy" not in (bot.buttons or [])  # it would copy the HTML
    fns = {f.api_name: f for f in screen.fns.values() if f.api_name}
    for name in ("chat_reply", "send_to_queue"):
        assert isinstance(fns[name].inputs[0], gr.State) and bot not in fns[name].inputs
    assert all(bot not in f.inputs for f in screen.fns.values())
