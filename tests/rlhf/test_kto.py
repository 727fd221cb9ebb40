"""KTO: reading replies marked good or bad in every format, and a tiny model moved toward the good ones."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rlhf.kto import KTORunConfig, balanced_weights, train_kto
from rlhf.kto_data import KTODataError, KTOExample, KTOReport, read_kto_examples, read_kto_split, split_examples
from rlhf.registry import ModelRegistry
from rlhf.runs import RunDir, run_guard

GOOD, BAD = "The sea is wide.", "def add(a, b)"


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _kto_rows(n: int) -> list[dict]:
    """Each prompt answered once well and once badly (as a ranking becomes KTO data)."""
    rows = []
    for i in range(n):
        rows.append({"prompt": f"question {i} about the sea", "completion": GOOD, "label": True})
        rows.append({"prompt": f"question {i} about the sea", "completion": BAD, "label": False})
    return rows


def test_every_format_reads(tmp_path: Path) -> None:
    rows = [{"prompt": "p", "completion": "good", "label": True}, {"prompt": "q", "completion": "bad", "label": 0}]
    plain = _jsonl(tmp_path / "kto.jsonl", rows)
    assert read_kto_examples(plain) == [KTOExample("p", "good", True), KTOExample("q", "bad", False)]
    # TRL's conversational variant: message lists, a multi-turn prompt kept as a transcript
    conv = [
        {
            "prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "sea?"}],
            "completion": [{"role": "assistant", "content": "wide"}],
            "label": 1,
        },
        {"prompt": [{"role": "user", "content": "sea?"}], "completion": [{"role": "assistant", "content": "no"}], "label": False},
    ]
    path = tmp_path / "conv.json"
    path.write_text(json.dumps(conv))
    first, second = read_kto_examples(path)
    assert first == KTOExample("User: hi\n\nAssistant: hello\n\nUser: sea?", "wide", True) and second.label is False
    gz = tmp_path / "kto.jsonl.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write(plain.read_text())
    assert len(read_kto_examples(gz)) == 2
    # a snapshot folder with KTO data
    snap = tmp_path / "snap"
    snap.mkdir()
    table = {"prompt": ["p", "p"], "completion": ["top", "bottom"], "label": [True, False], "source": ["ranking", "thumbs"]}
    table["reply_id"] = [1, 2]
    pq.write_table(pa.table(table), snap / "kto.parquet")
    assert read_kto_examples(snap) == [KTOExample("p", "top", True, "ranking"), KTOExample("p", "bottom", False, "thumbs")]
    # preference pairs (TRL and HH-RLHF) convert: chosen desirable, rejected undesirable; a repeated reply once
    pairs = _jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"prompt": "p", "chosen": "A", "rejected": "B"},
            {"prompt": "p", "chosen": "A", "rejected": "C"},
            {"chosen": "\n\nHuman: hi\n\nAssistant: yes", "rejected": "\n\nHuman: hi\n\nAssistant: no"},
        ],
    )
    report = KTOReport()
    found = read_kto_examples(pairs, report=report)
    assert [(e.completion, e.label) for e in found] == [("A", True), ("B", False), ("C", False), ("yes", True), ("no", False)]
    assert found[3].prompt == "User: hi" and report.converted_pairs == 3 and report.duplicates == 1
    assert "chosen reply = desirable, rejected reply = undesirable" in report.summary(pairs)


def test_bad_records_are_named(tmp_path: Path) -> None:
    cases = [
        ({"prompt": "p", "completion": "c", "label": "yes"}, "bad.jsonl line 2: field 'label' must be true/false or 1/0"),
        ({"prompt": "p", "label": True}, "bad.jsonl line 2: needs 'completion'"),
        ({"prompt": "p", "completion": 5, "label": True}, "bad.jsonl line 2: field 'completion' must be text"),
        ({"text": "p"}, "bad.jsonl line 2: needs 'prompt', 'completion' and 'label'"),
    ]
    for record, message in cases:
        path = _jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "completion": "c", "label": True}, record])
        with pytest.raises(KTODataError, match=message):
            read_kto_examples(path)
    (tmp_path / "broken.jsonl").write_text('{"prompt": "p", "completion": "c", "label": true}\n{oops\n')
    with pytest.raises(ValueError, match="broken.jsonl line 2: not valid JSON"):
        read_kto_examples(tmp_path / "broken.jsonl")
    with pytest.raises(KTODataError, match="not found"):
        read_kto_examples(tmp_path / "nowhere.jsonl")
    # a snapshot made without the KTO option: say how to get KTO data, and how to use its pairs instead
    old = tmp_path / "old-snap"
    old.mkdir()
    pq.write_table(pa.table({"prompt": ["p"], "chosen": ["a"], "rejected": ["b"]}), old / "preference.parquet")
    with pytest.raises(KTODataError, match="KTO option in the admin console") as err:
        read_kto_examples(old)
    assert str(old / "preference.parquet") in str(err.value)
    assert len(read_kto_examples(old / "preference.parquet")) == 2  # named as a file, its pairs convert


def test_one_kind_is_refused_with_what_to_do(tmp_path: Path) -> None:
    good = _jsonl(tmp_path / "good.jsonl", [{"prompt": f"p{i}", "completion": "c", "label": True} for i in range(4)])
    with pytest.raises(KTODataError, match="only desirable replies \\(4\\).*thumbs-down.*SFT"):
        read_kto_examples(good)
    bad = _jsonl(tmp_path / "bad.jsonl", [{"prompt": f"p{i}", "completion": "c", "label": 0} for i in range(3)])
    with pytest.raises(KTODataError, match="only undesirable replies \\(3\\).*thumbs-up"):
        read_kto_split(str(bad), None, 0.1, 0)
    # a peek at the start (the check before a run folder is made) cannot judge a file sorted by label
    assert len(read_kto_examples(good, limit=2)) == 2


def test_split_holds_out_both_kinds_and_whole_prompts(tmp_path: Path) -> None:
    examples = [KTOExample(**r) for r in _kto_rows(20)]
    train, held = split_examples(examples, 0.2, seed=3)
    assert len(train) + len(held) == 40 and len(held) >= 8
    assert {e.label for e in held} == {e.label for e in train} == {True, False}
    assert not {e.prompt for e in held} & {e.prompt for e in train}  # whole prompts held out
    assert split_examples(examples, 0.2, seed=3) == (train, held)  # seeded
    # thumbs: one reply per prompt, few bad ones: still both kinds on each side
    thumbs = [KTOExample(f"p{i}", "c", i < 2) for i in range(12)]
    train, held = split_examples(thumbs, 0.1, seed=0)
    assert {e.label for e in held} == {e.label for e in train} == {True, False}
    with pytest.raises(KTODataError, match="eval_data"):
        split_examples([KTOExample("p", "a", True), KTOExample("q", "b", False), KTOExample("r", "c", False)], 0.1, 0)
    assert balanced_weights(10, 30) == (3.0, 1.0) and balanced_weights(30, 10) == (1.0, 3.0)


def test_config_refusals() -> None:
    with pytest.raises(ValueError, match="batch_size must be at least 2.*KL"):
        KTORunConfig(data="x.jsonl", batch_size=1)
    with pytest.raises(ValueError, match="beta"):
        KTORunConfig(data="x.jsonl", beta=0)
    with pytest.raises(ValueError, match="desirable_weight"):
        KTORunConfig(data="x.jsonl", undesirable_weight=0)


def test_kto_moves_the_model_toward_the_desirable_replies(tmp_path: Path, studio_home: Path, tiny_lm_dir: Path, one_thread) -> None:
    registry = ModelRegistry()
    registry.add(tiny_lm_dir, name="tiny")
    # more bad replies than good ones: the weights are balanced by count
    rows = _kto_rows(16) + [{"prompt": f"extra {i}", "completion": BAD, "label": False} for i in range(8)]
    cfg = KTORunConfig(
        data=str(_jsonl(tmp_path / "kto.jsonl", rows)), policy="tiny", learning_rate=5e-3, epochs=3, batch_size=8, max_length=48,
        max_prompt_tokens=32, eval_fraction=0.2, lora_r=4, lora_alpha=8, logging_steps=2, save_steps=1000, register_as="tiny-kto",
        check_judge="function:tests.rlhf.judge_fns:longer_is_better", check_prompts=4,
    )  # fmt: skip
    run = RunDir.create(tmp_path / "runs", "kto", {})
    with run_guard(run, handle_sigterm=False) as stop:
        metrics = train_kto(cfg, run, stop, registry=registry)
    # before: the policy is the reference; after: desirable replies gained against undesirable ones
    assert metrics["eval_logratio_gap_before"] == 0.0 and metrics["eval_accuracy_before"] == 0.5
    assert metrics["eval_logratio_gap"] > 1.0, metrics
    assert metrics["eval_logratio_desirable"] > metrics["eval_logratio_undesirable"]
    assert metrics["eval_rewards/margins"] > 0.1 and metrics["eval_accuracy"] > 0.8
    assert metrics["desirable_weight"] > 1.0 and metrics["undesirable_weight"] == 1.0
    assert run.status()["state"] == "finished" and json.loads((run.path / "metrics.json").read_text())["registered_as"] == "tiny-kto"
    events = run.events()
    assert any("weights_why" in e and e["weights_why"].startswith("balanced by count") for e in events)
    assert any("loss" in e for e in events) and any(e.get("final") for e in events)
    assert (run.path / "check" / "replies.jsonl").is_file()
    entry = registry.get("tiny-kto")
    assert entry.kind == "causal-lm" and entry.lineage["method"] == "kto" and entry.lineage["policy"] == "tiny"
    assert "KTO (LoRA, beta 0.1)" in (run.checkpoint_dir / "README.md").read_text()
    from rlhf.loading import load_causal_lm

    tuned, tok = load_causal_lm("tiny-kto", registry, device="cpu", dtype=torch.float32)
    base, _ = load_causal_lm("tiny", registry, device="cpu", dtype=torch.float32)
    changed = [n for (n, a), b in zip(tuned.named_parameters(), base.parameters(), strict=True) if not torch.equal(a, b)]
    assert changed and all("proj" in n for n in changed)  # the merged LoRA layers, nothing else
    # the held-out gap, recomputed from the saved model and the base with plain forwards, is the one reported (no prompt is cut)
    _, held = split_examples(read_kto_examples(Path(cfg.data)), cfg.eval_fraction, cfg.seed)
    gaps = {True: [], False: []}
    for ex in held:
        prompt = [{"role": "user", "content": ex.prompt}]
        reply = {"role": "assistant", "content": ex.completion}
        ids = tok.apply_chat_template([*prompt, reply], tokenize=True, return_dict=True)["input_ids"]
        start = len(tok.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])
        x = torch.tensor([ids])

        def reply_logp(model, x=x, start=start) -> float:
            logps = torch.log_softmax(model(x).logits[0, :-1].float(), dim=-1).gather(1, x[0, 1:, None])[:, 0]
            return float(logps[start - 1 :].sum())

        with torch.no_grad():
            gaps[ex.label].append(reply_logp(tuned) - reply_logp(base))
    gap = sum(gaps[True]) / len(gaps[True]) - sum(gaps[False]) / len(gaps[False])
    tolerance = 0.05 if torch.cuda.is_available() else 1e-3  # on CUDA the run's figures come from bf16 autocast
    assert abs(gap - metrics["eval_logratio_gap"]) < tolerance * max(1.0, abs(gap)), (gap, metrics["eval_logratio_gap"])


def test_train_kto_from_the_command_line(tmp_path: Path, studio_home: Path, tiny_lm_dir: Path, capsys, one_thread) -> None:
    from studio.cli import main

    ModelRegistry().add(tiny_lm_dir, name="tiny")
    data = _jsonl(tmp_path / "kto.jsonl", _kto_rows(6))
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data: {data}\npolicy: tiny\nepochs: 1\nbatch_size: 4\nmax_length: 40\nmax_prompt_tokens: 16\nlora_r: 2\nlora_alpha: 4\n"
        "eval_fraction: 0.25\ncheck_judge: ''\nregister_as: cli-kto\nthreads: 1\n"
    )
    assert main(["train", "kto", "--config", str(config), "--runs-dir", str(tmp_path / "runs")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "finished" in out and "registered_as=cli-kto" in out
    [run_path] = (tmp_path / "runs").iterdir()
    log = (run_path / "run.log").read_text()
    assert "12 KTO examples, 6 desirable and 6 undesirable" in log and "loss weights: desirable 1" in log
    # a snapshot without KTO data is refused before a run folder is made
    old = tmp_path / "old-snap"
    old.mkdir()
    pq.write_table(pa.table({"prompt": ["p"], "chosen": ["a"], "rejected": ["b"]}), old / "preference.parquet")
    config.write_text(f"data: {old}\npolicy: tiny\n")
    assert main(["train", "kto", "--config", str(config), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "KTO option in the admin console" in capsys.readouterr().err
    assert len(list((tmp_path / "runs").iterdir())) == 1


def test_kto_screen_offers_kto_snapshots_first(tmp_path: Path, studio_home: Path, tiny_lm_dir: Path) -> None:
    """Real snapshots of a ranked project, one with the KTO option: read as KTO data, offered first."""
    from annotations.accounts import add_annotator
    from annotations.queue import next_prompt, submit_ranking
    from annotations.snapshot import create_snapshot
    from annotations.store import PromptRecord, ReplyRecord
    from studio import kto_tab
    from studio.context import StudioContext
    from studio.training_screen import preview

    ctx = StudioContext.open(tmp_path / "s.duckdb", device="cpu")
    try:
        ctx.registry.add(tiny_lm_dir, name="tiny")
        ana = add_annotator(ctx.store, "ana", "ana-password")
        pid = ctx.store.create_project("qa", k=3, min_submitted=1)
        for i, prompt_id in enumerate(ctx.store.add_prompts(pid, [PromptRecord(f"Where is sea {i}?") for i in range(3)])):
            ctx.store.add_replies(prompt_id, [ReplyRecord(GOOD), ReplyRecord(f"so-so {i}"), ReplyRecord(f"{BAD} {i}")])
        while (item := next_prompt(ctx.store, pid, ana)) is not None:
            order = {r.id: 1 if r.text == GOOD else 3 if r.text.startswith(BAD) else 2 for r in item.replies}
            submit_ranking(ctx.store, ana, item.prompt.id, order)
        plain = create_snapshot(ctx.store, ctx.snapshot_root, project="qa")
        kto = create_snapshot(ctx.store, ctx.snapshot_root, project="qa", kto=True)
        # the top reply desirable, the bottom one undesirable, the middle one left out
        examples = read_kto_examples(kto.folder)
        assert sorted((e.completion.split()[0], e.label) for e in examples) == [("The", True)] * 3 + [("def", False)] * 3
        assert {e.source for e in examples} == {"ranking"}
        choices = kto_tab.data_choices(ctx)
        assert [v for _, v in choices] == [str(kto.folder), str(plain.folder / "preference.parquet")]
        assert choices[0][0].endswith("KTO: 3 desirable, 3 undesirable") and "converted" in choices[1][0]
        with pytest.raises(KTODataError, match="KTO option in the admin console"):
            read_kto_examples(plain.folder)
        yaml_text, command = preview(ctx, kto_tab.SPEC, choices[0][1], "tiny", {"beta": 0.2, "balance_weights": False})
        assert "rlhf-studio train kto --config run.yaml" in command and "beta: 0.2" in yaml_text and "balance_weights: false" in yaml_text
        yaml_text, _ = preview(ctx, kto_tab.SPEC, choices[0][1], "tiny", {"batch_size": 1})
        assert yaml_text.startswith("# not ready") and "batch_size must be at least 2" in yaml_text
        kto_tab.build(ctx)  # the form builds from the config's fields
    finally:
        ctx.close()
