"""Prompts files for batch generation: every format, and errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.prompt_files import PromptFileError, read_prompt_records


def _prompts(path: Path) -> list:
    return [p for _, p in read_prompt_records(path)]


def test_jsonl_shapes(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    rows = [
        {"prompt": "plain"},
        {"messages": [{"role": "user", "content": "chat"}]},
        {"instruction": "Summarise", "input": "a text"},
        {"instruction": "Answer", "context": "ctx", "response": "ignored", "category": "qa"},
        {"instruction": "Alone"},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert _prompts(f) == ["plain", [{"role": "user", "content": "chat"}], "Summarise\n\na text", "Answer\n\nctx", "Alone"]


def test_csv_txt_json_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "p.csv").write_text("prompt,category\nfirst,a\nsecond,b\n")
    (tmp_path / "p.txt").write_text("first\n\nsecond\n")
    (tmp_path / "p.json").write_text(json.dumps([{"prompt": "first"}, {"prompt": "second"}]))
    pq.write_table(pa.table({"prompt": ["first", "second"]}), tmp_path / "p.parquet")
    for name in ("p.csv", "p.txt", "p.json", "p.parquet"):
        assert _prompts(tmp_path / name) == ["first", "second"], name


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"prompt": "ok"}\n{"prompt": "broken"\n', r"p\.jsonl:2: not valid JSON"),
        ('{"prompt": "ok"}\n{"text": "x"}\n', r"p\.jsonl:2: no 'prompt', 'messages' or 'instruction' field \(found: text\)"),
        ('{"prompt": ""}\n', r"p\.jsonl:1: field 'prompt' must be non-empty"),
        ('{"messages": [{"content": "no role"}]}\n', r"p\.jsonl:1: field 'messages' must be a list"),
        ("\n\n", "holds no prompts"),
    ],
)
def test_jsonl_errors_name_line_and_field(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(content)
    with pytest.raises(PromptFileError, match=message):
        read_prompt_records(f)


def test_csv_error_names_the_file_line(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text('prompt\nfine\n""\n')
    with pytest.raises(PromptFileError, match=r"p\.csv:3: field 'prompt'"):
        read_prompt_records(f)


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "p.xlsx").write_text("x")
    with pytest.raises(PromptFileError, match="unsupported file type"):
        read_prompt_records(tmp_path / "p.xlsx")
    with pytest.raises(PromptFileError, match="not found"):
        read_prompt_records(tmp_path / "nope.jsonl")
