"""Hostile and malformed import files: each gets a message with its place and writes nothing.

Regression tests for what a hostile tester found: non-UTF-8 bytes and byte-order marks,
JSON nested past Python's recursion limit, lone surrogates (which DuckDB refuses, and which
used to leave an ``import`` account behind), broken JSON lines that "leave bad records out"
did not leave out, a 2 MB prompt that imported fine, and hints that named a CLI flag in the
browser. Also duplicates and chosen == rejected.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from annotations.importers import ImportFailed, import_file, parse_file
from annotations.limits import Limits
from annotations.store import PromptRecord, ReplyRecord, Store

PAIR = {"prompt": "Sky colour?", "chosen": "Blue.", "rejected": "Green."}


def _counts(store: Store) -> tuple[int, ...]:
    return tuple(store.query(f"SELECT count(*) FROM {t}")[0][0] for t in ("prompts", "replies", "rankings", "annotators"))


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def _fails(store: Store, pid: int, path: Path, match: str, **kwargs) -> ImportFailed:
    before = _counts(store)
    with pytest.raises(ImportFailed, match=match) as info:
        import_file(store, pid, path, **kwargs)
    assert _counts(store) == before
    return info.value


@pytest.fixture
def pid(store: Store) -> int:
    return store.create_project("p")


# -- encodings --------------------------------------------------------------------------------------
LATIN1 = {
    ".jsonl": b'{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n{"prompt": "also fine"}\n',
    ".json": b'[{"prompt": "fine"},\n{"prompt": "caf\xe9"}\n]\n',
    ".csv": b"prompt\ncaf\xe9\nfine\n",
}


@pytest.mark.parametrize("suffix", list(LATIN1))
def test_bytes_that_are_not_utf8_are_named_by_offset_and_line(store: Store, pid: int, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"latin1{suffix}"
    path.write_bytes(LATIN1[suffix])
    offset = LATIN1[suffix].index(b"\xe9")
    exc = _fails(store, pid, path, rf"latin1{suffix} line 2: .*offset {offset} of the file \(0xE9\) is not UTF-8.*save the file as UTF-8")
    assert "Traceback" not in str(exc)


def test_a_jsonl_line_that_is_not_utf8_can_be_left_out(store: Store, pid: int, tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(LATIN1[".jsonl"])
    report = import_file(store, pid, path, skip_invalid=True)
    assert report.prompts == 2 and len(report.left_out) == 1
    assert report.left_out[0].line == 2 and "0xE9" in report.left_out[0].reason


def test_csv_or_json_that_is_not_utf8_cannot_be_left_out_record_by_record(store: Store, pid: int, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(LATIN1[".csv"])
    exc = _fails(store, pid, path, "not UTF-8", skip_invalid=True)
    assert not exc.skippable and exc.hint("tick the box") == ""


@pytest.mark.parametrize(
    "name, content",
    [
        ("bom.jsonl", '{"prompt": "first"}\n{"prompt": "second"}\n'),
        ("bom.json", '[{"prompt": "first"}, {"prompt": "second"}]'),
        ("bom.csv", "prompt,category\nfirst,qa\nsecond,qa\n"),
    ],
)
def test_utf8_with_a_byte_order_mark_is_accepted(store: Store, pid: int, tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + content.encode())
    report = import_file(store, pid, path)
    assert report.prompts == 2 and report.shapes == {"prompt": 2}
    assert [p.text for p in store.prompts(pid)] == ["first", "second"]


def test_utf16_is_refused_with_what_to_do(store: Store, pid: int, tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("prompt\nhello\n".encode("utf-16"))
    _fails(store, pid, path, "UTF-16 .*save the file as UTF-8")
    path.write_bytes("prompt\nhello\n".encode("utf-16-le"))  # no byte-order mark: NUL bytes give it away
    _fails(store, pid, path, "NUL bytes.*UTF-16")


def test_a_line_separator_inside_a_jsonl_string_is_not_a_new_line(store: Store, pid: int, tmp_path: Path) -> None:
    path = tmp_path / "u2028.jsonl"
    path.write_text('{"prompt": "one\u2028two"}\n{"prompt": "three"}\n', encoding="utf-8")
    assert import_file(store, pid, path).prompts == 2


def test_a_file_name_that_is_not_utf8_is_shown_escaped(store: Store, pid: int, tmp_path: Path) -> None:
    path = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.jsonl"))
    _jsonl(path, [{"prompt": "hello"}])
    assert import_file(store, pid, path).prompts == 1
    assert store.prompts(pid)[0].source == "caf\\udce9.jsonl"


# -- nesting ----------------------------------------------------------------------------------------
def _nested(depth: int) -> str:
    return '{"prompt": "x", "extra": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("depth", [30, 100_000])  # past the limit; past Python's recursion limit
def test_deep_nesting_is_a_bad_record_not_a_recursion_error(store: Store, pid: int, tmp_path: Path, depth: int) -> None:
    path = _jsonl(tmp_path / "deep.jsonl", [{"prompt": "fine"}, _nested(depth), {"prompt": "fine too"}])
    _fails(store, pid, path, r"deep\.jsonl line 2: nested more than 20 levels deep")
    report = import_file(store, pid, path, skip_invalid=True)
    assert report.prompts == 2 and [p.line for p in report.left_out] == [2]


def test_deep_nesting_in_json_csv_and_a_messages_field(store: Store, pid: int, tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('[{"prompt": "fine"},\n' + _nested(100_000) + "]")
    _fails(store, pid, deep, r"deep\.json record 2 \(line 2\): nested more than 20 levels")
    deep.write_text('[{"prompt": "fine"},\n' + _nested(25) + "]")
    _fails(store, pid, deep, r"deep\.json record 2 \(line 2\): nested more than 20 levels")
    csv_file = tmp_path / "deep.csv"
    csv_file.write_text('messages\n"[{""role"": ""user"", ""content"": ""hi""}]"\n"' + ("[" * 5000 + "]" * 5000) + '"\n')
    _fails(store, pid, csv_file, r"deep\.csv line 3: field 'messages' must be a list of messages: nested more than 20")


def test_the_depth_limit_comes_from_the_environment(store: Store, pid: int, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STUDIO_MAX_JSON_DEPTH", "2")
    msgs = {"messages": [{"role": "user", "content": "hi"}]}  # object > list > object: 3 levels
    with Store(tmp_path / "other.duckdb") as other:
        _fails(other, other.create_project("q"), _jsonl(tmp_path / "m.jsonl", [msgs]), "nested more than 2 levels.*STUDIO_MAX_JSON_DEPTH")
    assert import_file(store, pid, tmp_path / "m.jsonl").prompts == 1  # 20 by default


# -- lone surrogates ----------------------------------------------------------------------------------
def test_lone_surrogates_name_line_and_field_and_leave_no_account_behind(store: Store, pid: int, tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "sur.jsonl", [PAIR, r'{"prompt": "q", "chosen": "ok\ud800", "rejected": "no"}'])
    _fails(store, pid, path, r"sur\.jsonl line 2: field 'chosen' holds a lone surrogate \(\\ud800\)")
    assert store.query("SELECT count(*) FROM annotators")[0][0] == 0  # the regression: an 'import' row stayed
    path = _jsonl(tmp_path / "msg.jsonl", [r'{"messages": [{"role": "user", "content": "\udfff"}]}'])
    _fails(store, pid, path, r"line 1: field 'messages\[0\]\.content' holds a lone surrogate")
    path = _jsonl(tmp_path / "key.jsonl", [r'{"prompt": "x", "\ud800": 1}'])
    _fails(store, pid, path, r"line 1: a field name holds a lone surrogate")


def test_escaped_surrogate_pairs_are_fine(store: Store, pid: int, tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "emoji.jsonl", [r'{"prompt": "smile \ud83d\ude00"}'])
    import_file(store, pid, path)
    assert store.prompts(pid)[0].text == "smile \U0001f600"


def test_the_store_refuses_lone_surrogates_on_every_path(store: Store, pid: int) -> None:
    from annotations.store import StoreError

    with pytest.raises(StoreError, match="prompt 1: the prompt holds a lone surrogate"):
        store.add_prompts(pid, [PromptRecord("a\ud800")])
    [prompt_id] = store.add_prompts(pid, [PromptRecord("fine")])
    with pytest.raises(StoreError, match="reply 1 for prompt .*lone surrogate"):
        store.add_replies(prompt_id, [ReplyRecord("\udc80")])
    with pytest.raises(StoreError, match="guidelines holds a lone surrogate"):
        store.create_project("q", guidelines="\ud800")


# -- broken JSON and leaving bad records out ---------------------------------------------------------
def test_leave_bad_records_out_skips_broken_json_lines_too(store: Store, pid: int, tmp_path: Path) -> None:
    rows = [{"prompt": "one"}, '{"prompt": "broken', {"prompt": ""}, "[1, 2]", {"prompt": "two"}]
    path = _jsonl(tmp_path / "mixed.jsonl", rows)
    exc = _fails(store, pid, path, r"mixed\.jsonl: 3 bad records")
    assert [(p.line, p.reason.split(" (")[0]) for p in exc.problems] == [
        (2, "not valid JSON"),
        (3, "field 'prompt' is missing or empty"),
        (4, "expected an object with named fields"),
    ]
    assert "- line 2: not valid JSON" in str(exc) and exc.skippable
    report = import_file(store, pid, path, skip_invalid=True)
    assert report.prompts == 2 and [p.line for p in report.left_out] == [2, 3, 4]
    assert report.skipped[0].startswith("mixed.jsonl line 2: not valid JSON")


def test_a_broken_first_line_does_not_decide_the_shape(store: Store, pid: int, tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "p.jsonl", ["{oops", PAIR])
    report = import_file(store, pid, path, skip_invalid=True)
    assert report.shapes == {"preference": 1} and report.rankings == 1


def test_nothing_valid_is_an_error_even_when_leaving_bad_records_out(store: Store, pid: int, tmp_path: Path) -> None:
    exc = _fails(store, pid, _jsonl(tmp_path / "bad.jsonl", ["{", "}"]), r"bad\.jsonl: no valid records", skip_invalid=True)
    assert len(exc.problems) == 2 and not exc.skippable


def test_a_long_list_of_problems_is_cut_in_the_message_but_kept_whole(store: Store, pid: int, tmp_path: Path) -> None:
    exc = _fails(store, pid, _jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}] + ["{"] * 30), "31 bad records|30 bad records")
    assert len(exc.problems) == 30 and "- and 10 more" in str(exc)


def test_messages_name_no_front_end(store: Store, pid: int, tmp_path: Path) -> None:
    exc = _fails(store, pid, _jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"prompt": 7}]), "line 2: field 'prompt' must be text")
    assert "--skip-invalid" not in str(exc) and "tick" not in str(exc)
    assert "rerun with --skip-invalid" in exc.hint("rerun with --skip-invalid")
    assert "tick 'Leave bad records out'" in exc.hint("tick 'Leave bad records out'")


# -- CSV ---------------------------------------------------------------------------------------------
def test_csv_rows_with_extra_fields_and_multi_line_fields(store: Store, pid: int, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text('prompt,category\n"two\nlines",qa\nfine,qa,EXTRA\n,qa\n', encoding="utf-8")
    exc = _fails(store, pid, path, "2 bad records")
    assert [(p.place, p.reason) for p in exc.problems] == [
        ("line 4", "has more fields than the header's 2 columns"),
        ("line 5", "field 'prompt' is missing or empty"),
    ]
    assert import_file(store, pid, path, skip_invalid=True).prompts == 1
    assert store.prompts(pid)[0].text == "two\nlines"


def test_a_csv_field_over_the_csv_modules_limit_is_an_oversize_record(store: Store, pid: int, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("prompt\nfine\n" + "x" * 200_000 + "\nfine too\n", encoding="utf-8")
    _fails(store, pid, path, r"big\.csv line 3: the prompt has 200,000 characters, more than the limit of 20,000")
    assert import_file(store, pid, path, skip_invalid=True).prompts == 2


# -- sizes -------------------------------------------------------------------------------------------
def test_a_2mb_prompt_is_refused_with_its_line(store: Store, pid: int, tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "huge.jsonl", [{"prompt": "fine"}, {"prompt": "x" * 2_000_000}])
    _fails(store, pid, path, r"huge\.jsonl line 2: the prompt has 2,000,000 characters.*STUDIO_MAX_PROMPT_CHARS")
    assert import_file(store, pid, path, skip_invalid=True).prompts == 1


def test_oversize_replies_name_their_field(store: Store, pid: int, tmp_path: Path) -> None:
    big = {**PAIR, "rejected": "y" * 20_001}
    _fails(store, pid, _jsonl(tmp_path / "r.jsonl", [big]), r"line 1: field 'rejected': the reply has 20,001 characters")
    convo = {"messages": [{"role": "user", "content": "z" * 20_001}]}
    _fails(store, pid, _jsonl(tmp_path / "m.jsonl", [convo]), r"line 1: the prompt has 20,001 characters")
    dolly = {"instruction": "do", "context": "", "response": "w" * 20_001}
    _fails(store, pid, _jsonl(tmp_path / "d.jsonl", [dolly]), r"line 1: field 'response': the reply has")


def test_the_store_refuses_oversize_text_on_every_path(tmp_path: Path, monkeypatch) -> None:
    from annotations.store import StoreError

    monkeypatch.setenv("STUDIO_MAX_PROMPT_CHARS", "10")
    monkeypatch.setenv("STUDIO_MAX_REPLY_CHARS", "5")
    monkeypatch.setenv("STUDIO_MAX_GUIDELINES_CHARS", "8")
    with Store(tmp_path / "s.duckdb") as store:
        assert store.limits == Limits(prompt=10, reply=5, guidelines=8)
        with pytest.raises(StoreError, match="guidelines has 9 characters, more than the limit of 8"):
            store.create_project("p", guidelines="g" * 9)
        pid = store.create_project("p", guidelines="g" * 8)
        with pytest.raises(StoreError, match="prompt 2: the prompt has 11 characters.*STUDIO_MAX_PROMPT_CHARS"):
            store.add_prompts(pid, [PromptRecord("ok"), PromptRecord("p" * 11)])
        [prompt_id] = store.add_prompts(pid, [PromptRecord("p" * 10)])
        with pytest.raises(StoreError, match="reply 1 for prompt .*: the reply has 6 characters"):
            store.add_replies(prompt_id, [ReplyRecord("r" * 6)])
        store.add_replies(prompt_id, [ReplyRecord("r" * 5)])
        assert store.count_prompts(pid) == 1


# -- preference pairs ---------------------------------------------------------------------------------
def test_chosen_equal_to_rejected_is_refused_or_left_out(store: Store, pid: int, tmp_path: Path) -> None:
    same = {"prompt": "q", "chosen": "Same.", "rejected": " Same. "}
    hh_same = "\n\nHuman: hi\n\nAssistant: hello"
    path = _jsonl(tmp_path / "p.jsonl", [PAIR, same])
    _fails(store, pid, path, r"line 2: 'chosen' and 'rejected' are the same reply")
    report = import_file(store, pid, path, skip_invalid=True)
    assert report.rankings == 1 and "same reply" in report.skipped[0]
    _fails(store, pid, _jsonl(tmp_path / "hh.jsonl", [{"chosen": hh_same, "rejected": hh_same}]), "the same reply")


# -- duplicates --------------------------------------------------------------------------------------
def test_duplicates_in_the_file_are_skipped_and_counted(store: Store, pid: int, tmp_path: Path) -> None:
    rows = [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "a"}, {"prompt": "c"}, {"prompt": "b"}, {"prompt": "a"}]
    report = import_file(store, pid, _jsonl(tmp_path / "d.jsonl", rows))
    assert report.prompts == 3 and report.shapes == {"prompt": 3}
    assert [(p.line, p.reason) for p in report.duplicates] == [
        (3, "the same prompt as line 1"),
        (5, "the same prompt as line 2"),
        (6, "the same prompt as line 1"),
    ]
    note = report.duplicates_note()
    assert note.startswith("Skipped 3 duplicate records") and "d.jsonl line 3, line 5, line 6." in note


def test_reimporting_a_file_imports_nothing_twice(store: Store, pid: int, tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "pairs.jsonl", [PAIR, {**PAIR, "chosen": "Azure.", "rejected": "Green."}])
    assert import_file(store, pid, path).rankings == 2  # the same prompt, two different pairs: both kept
    again = import_file(store, pid, path)
    assert (again.prompts, again.replies, again.rankings) == (0, 0, 0) and len(again.duplicates) == 2
    assert again.duplicates[0].reason == "the same prompt and replies is already in the project"
    swapped = _jsonl(tmp_path / "swapped.jsonl", [{**PAIR, "chosen": "Green.", "rejected": "Blue."}])
    assert import_file(store, pid, swapped).rankings == 1  # the opposite verdict is not a duplicate


def test_a_prompt_with_generated_candidates_is_still_a_duplicate(store: Store, tmp_path: Path) -> None:
    pid = store.create_project("dolly", k=3)
    path = _jsonl(tmp_path / "d.jsonl", [{"instruction": "Summarise", "context": "Text.", "response": "Short."}])
    import_file(store, pid, path)
    [prompt] = store.prompts(pid)
    store.add_replies(prompt.id, [ReplyRecord("generated 1"), ReplyRecord("generated 2")])
    assert import_file(store, pid, path).prompts == 0
    plain = _jsonl(tmp_path / "plain.jsonl", [{"prompt": prompt.text}])
    assert import_file(store, pid, plain).prompts == 0


def test_duplicate_check_is_per_project(store: Store, pid: int, tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}])
    import_file(store, pid, path)
    assert import_file(store, store.create_project("other"), path).prompts == 1


def test_parse_file_checks_without_a_store(tmp_path: Path) -> None:
    parsed = parse_file(_jsonl(tmp_path / "p.jsonl", [PAIR, "{"]), skip_invalid=True, limits=Limits())
    assert len(parsed.items) == 1 and parsed.problems[0].place == "line 2"
