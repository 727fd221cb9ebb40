"""The command line: help, models, generate; user errors exit 2 with one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from studio.cli import main


def test_help_lists_the_commands(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "init", "models", "generate"):
        assert command in out


def test_python_m_rlhf_has_the_same_model_commands(studio_home: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "rlhf", "models", "list"], capture_output=True, text=True, check=True).stdout
    assert "smollm2-135m-instruct" in out and "minilm-l6" in out and "apache-2.0" in out


def test_models_add_and_list(studio_home: Path, tiny_lm_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "add", str(tiny_lm_dir), "--name", "tiny"]) == 0
    assert "registered tiny: causal-lm" in capsys.readouterr().out
    assert main(["models", "list", "--json"]) == 0
    names = [e["name"] for e in json.loads(capsys.readouterr().out)]
    assert names == ["smollm2-135m-instruct", "minilm-l6", "tiny"]


def test_models_add_bad_folder_exits_2(studio_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "add", str(tmp_path / "nothing")]) == 2
    assert "error: model folder" in capsys.readouterr().err


def test_generate_writes_one_reply_per_prompt(studio_home: Path, tiny_lm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"id": i, "prompt": f"question {i}"}) for i in range(5)))
    out = tmp_path / "out" / "replies.jsonl"
    argv = [
        "generate",
        "--model",
        str(tiny_lm_dir),
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--temperature",
        "0",
        "--max-new-tokens",
        "4",
        "--batch-size",
        "2",
    ]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(5))
    assert rows[0]["agent"]["sampling"]["temperature"] == 0 and rows[0]["agent"]["model"] == str(tiny_lm_dir)
    assert all(r["new_tokens"] <= 4 for r in rows)
    assert "wrote 5 replies" in capsys.readouterr().out


def test_generate_with_bad_input_writes_nothing(studio_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "ok"}\n{oops}\n')
    out = tmp_path / "replies.jsonl"
    assert main(["generate", "--prompts", str(prompts), "--out", str(out)]) == 2
    assert "p.jsonl:2: not valid JSON" in capsys.readouterr().err
    good = tmp_path / "good.txt"
    good.write_text("hello\n")
    assert main(["generate", "--model", "no-such-model", "--prompts", str(good), "--out", str(out)]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    assert main(["generate", "--prompts", str(good), "--out", str(out), "--top-p", "2"]) == 2
    assert "top_p must be in (0, 1]" in capsys.readouterr().err
    assert not out.exists()
