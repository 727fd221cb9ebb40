"""Judged comparisons: judges, win-rate statistics, lineage warnings and the ``eval compare`` run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rlhf.cli import main
from rlhf.evaluation import EvalRunConfig, lineage_warnings
from rlhf.judges import FunctionJudge, JudgeSpecError, check_judge, swap_debiased
from rlhf.registry import ModelRegistry
from rlhf.win_rates import bootstrap_mean, length_controlled


# -- judges ------------------------------------------------------------------------------------------
def test_position_swap_cancels_a_judge_that_always_prefers_the_first_reply() -> None:
    judge = FunctionJudge("tests.rlhf.judge_fns:prefers_first")
    found = judge.judge(["q"] * 20, ["short"] * 20, ["a much longer reply"] * 20)
    assert {j.verdict for j in found} == {"tie"}
    assert all(j.preference == 0 and j.orders == (5.0, 5.0) for j in found)
    assert np.mean([j.outcome for j in found]) == 0.5


def test_swapped_judge_keeps_a_real_preference_in_either_position() -> None:
    judge = FunctionJudge("tests.rlhf.judge_fns:likes_e")
    found = judge.judge(["q", "q", "q"], ["eee", "x", "e"], ["x", "eee", "e"])
    assert [j.verdict for j in found] == ["a", "b", "tie"]
    assert found[0].preference == 3 and found[1].preference == -3


def test_a_position_bias_larger_than_the_preference_still_cancels() -> None:
    # the judge prefers the first position by 2, and "good" over "bad" by 1 or 3
    def ask(strength):
        def judge(prompts, first, second):
            return [2.0 + strength * ((f == "good") - (s == "good")) for f, s in zip(first, second, strict=True)]

        return judge

    for strength in (1.0, 3.0):
        found = swap_debiased(ask(strength), ["q"] * 2, ["good", "bad"], ["bad", "good"])
        assert [j.verdict for j in found] == ["a", "b"]
        assert [j.preference for j in found] == [strength, -strength]
        assert found[0].orders == (2.0 + strength, 2.0 - strength)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "oracle", "model": "x"}, "type must be one of"),
        ({"type": "reward_model"}, "needs 'model'"),
        ({"type": "function", "function": "nocolon"}, "module.path:function_name"),
        ({"type": "pairwise", "model": "m", "template": "{prompt} only"}, "{first}"),
        ({"type": "reward_model", "model": "m", "colour": 1}, "unknown key"),
    ],
)
def test_bad_judges_are_refused_with_a_reason(spec: dict, message: str) -> None:
    with pytest.raises(JudgeSpecError, match=message.replace("{", r"\{")):
        check_judge(spec)


# -- statistics -------------------------------------------------------------------------------------
def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_prompts() -> None:
    rng = np.random.default_rng(1)
    small = bootstrap_mean(rng.integers(0, 2, 40).tolist())
    large = bootstrap_mean(rng.integers(0, 2, 1000).tolist())
    assert small.low <= small.value <= small.high
    assert (large.high - large.low) < (small.high - small.low) / 3


def test_length_controlled_rate_removes_a_judge_that_only_likes_length() -> None:
    rng = np.random.default_rng(0)
    n = 400
    base = rng.integers(20, 80, n)
    model = base + rng.normal(25, 30, n).round()  # the model writes longer replies, mostly
    diff = model - base
    p = 1 / (1 + np.exp(-diff / 10))  # the judge sees nothing but length
    outcomes = (rng.random(n) < p).astype(float)
    raw = outcomes.mean()
    lc = length_controlled(outcomes, model, base, rounds=100)
    assert raw > 0.7
    assert lc.low < 0.5 < lc.high and abs(lc.value - 0.5) < 0.1


def test_length_controlled_rate_keeps_a_real_improvement() -> None:
    rng = np.random.default_rng(2)
    n = 400
    base = rng.integers(20, 80, n)
    model = base + rng.normal(0, 30, n).round()  # lengths unrelated to who wins
    outcomes = (rng.random(n) < 0.8).astype(float)
    lc = length_controlled(outcomes, model, base, rounds=100)
    assert abs(lc.value - outcomes.mean()) < 0.05 and lc.low > 0.7


def test_ties_count_half_in_the_length_controlled_fit() -> None:
    lc = length_controlled([0.5] * 50, list(range(50)), [25] * 50, rounds=100)
    assert lc.value == pytest.approx(0.5, abs=0.01)


# -- lineage ----------------------------------------------------------------------------------------
def test_judging_a_policy_with_its_own_reward_model_warns(studio_home: Path, tiny_lm_dir: Path) -> None:
    registry = ModelRegistry()
    registry.add(tiny_lm_dir, name="sft-a", lineage={"run": "sft-1", "base_model": "smollm2-135m-instruct", "data": "d.jsonl"})
    registry.add(
        tiny_lm_dir,
        name="ppo-a",
        lineage={"run": "ppo-1", "policy": "sft-a", "rewards": [{"type": "model", "model": "rm-a", "weight": 1.0}]},
    )
    contenders = [{"model": "smollm2-135m-instruct"}, {"model": "ppo-a"}]
    found = lineage_warnings(contenders, {"type": "reward_model", "model": "rm-a"}, registry)
    assert len(found) == 1 and "ppo-a was trained against reward model rm-a" in found[0] and "proxy" in found[0]
    assert lineage_warnings(contenders, {"type": "reward_model", "model": "rm-b"}, registry) == []
    # an ancestor trained on the judge's data is named too
    registry.add(tiny_lm_dir, name="rm-c", lineage={"run": "reward-1", "data": "d.jsonl"})
    assert any("same data" in w for w in lineage_warnings(contenders, {"type": "reward_model", "model": "rm-c"}, registry))
    assert any("also the judge" in w for w in lineage_warnings(contenders, {"type": "pairwise", "model": "ppo-a"}, registry))


def test_a_judge_that_picked_the_checkpoint_is_named(studio_home: Path, tiny_lm_dir: Path) -> None:
    registry = ModelRegistry()
    judge = [{"type": "model", "model": "rm-judge"}]
    rewards = [{"type": "model", "model": "rm-a"}]
    registry.add(
        tiny_lm_dir, name="ppo-es", lineage={"run": "ppo-2", "rewards": rewards, "heldout_judge": judge, "checkpoint_chosen_by_judge": True}
    )
    registry.add(tiny_lm_dir, name="ppo-watched", lineage={"run": "ppo-3", "rewards": rewards, "heldout_judge": judge})
    contenders = [{"model": "smollm2-135m-instruct"}, {"model": "ppo-es"}, {"model": "ppo-watched"}]
    found = lineage_warnings(contenders, {"type": "reward_model", "model": "rm-judge"}, registry)
    assert len(found) == 1 and "ppo-es was saved at the step where reward model rm-judge scored it best" in found[0]
    assert lineage_warnings(contenders, {"type": "reward_model", "model": "rm-other"}, registry) == []


# -- the run ----------------------------------------------------------------------------------------
def _prompts(tmp_path: Path, n: int = 6) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"Tell me about the sea, part {i}."}) for i in range(n)) + "\n")
    return path


def test_eval_compare_from_the_command_line(studio_home: Path, tiny_lm_dir: Path, tmp_path: Path, capsys) -> None:
    from tests.tiny import make_tiny_causal_lm

    other = make_tiny_causal_lm(tmp_path / "other-lm", seed=7)
    runs = tmp_path / "runs"
    argv = ["eval", "compare", "--model", str(tiny_lm_dir), "--model", str(other), "--prompts", str(_prompts(tmp_path))]
    argv += ["--judge", "function:tests.rlhf.judge_fns:longer_is_better", "--max-new-tokens", "6", "--runs-dir", str(runs)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "WIN RATE [95% CI]" in out and "LENGTH-CONTROLLED" in out
    (run,) = list(runs.iterdir())
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    results = json.loads((run / "results.json").read_text())
    (row,) = results["contenders"]
    assert row["contender"] == str(other) and row["baseline"] == str(tiny_lm_dir) and row["prompts"] == 6
    assert row["wins"] + row["ties"] + row["losses"] == 6
    assert row["win_rate_low"] <= row["win_rate"] <= row["win_rate_high"]
    replies = [json.loads(line) for line in (run / "replies.jsonl").read_text().splitlines()]
    assert len(replies) == 12 and {r["contender"] for r in replies} == {str(tiny_lm_dir), str(other)}
    # the judge really decided: a win is a longer reply
    for r in (r for r in replies if r.get("verdict") == "win"):
        base = next(b for b in replies if b["prompt_index"] == r["prompt_index"] and "verdict" not in b)
        assert len(r["reply"].split()) > len(base["reply"].split())
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert any(e.get("phase", "").startswith("generating") for e in events) and events[-1].get("final")


def test_eval_with_a_template_contender_and_the_pairwise_lm_judge(studio_home: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
    from rlhf.evaluation import compare

    cfg = EvalRunConfig(
        contenders=[
            {"model": str(tiny_lm_dir), "label": "plain"},
            {"model": str(tiny_lm_dir), "label": "terse", "template": {"name": "terse", "system": "Be terse.", "template": "Q: {input}"}},
        ],
        prompts=str(_prompts(tmp_path, 4)),
        judge={"type": "pairwise", "model": str(tiny_lm_dir)},
        max_new_tokens=4,
        bootstrap=200,
    )
    rows: list[dict] = []
    results = compare(cfg, write_replies=rows.extend)
    (row,) = results["contenders"]
    assert row["contender"] == "terse" and row["baseline"] == "plain"
    judged = [r for r in rows if "verdict" in r]
    assert len(judged) == 4 and all(len(r["orders"]) == 2 and np.isfinite(r["preference"]) for r in judged)
    assert any("also the judge" in w for w in results["warnings"])


def test_eval_config_errors_make_no_run_folder(studio_home: Path, tiny_lm_dir: Path, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    base = ["eval", "compare", "--runs-dir", str(runs), "--max-new-tokens", "4"]
    assert main([*base, "--model", str(tiny_lm_dir), "--prompts", str(_prompts(tmp_path))]) == 2
    assert "at least two --model" in capsys.readouterr().err
    assert main([*base, "--model", str(tiny_lm_dir), "--model", "no-such-model", "--prompts", str(_prompts(tmp_path))]) == 2
    assert "no-such-model" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt field"}\n')
    assert main([*base, "--model", str(tiny_lm_dir), "--model", str(tiny_lm_dir), "--prompts", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "label" in err  # the same model twice needs labels: said before anything runs
    assert main([*base, "--model", "smollm2-135m-instruct", "--model", str(tiny_lm_dir), "--prompts", str(bad)]) == 2
    assert "no 'prompt'" in capsys.readouterr().err
    assert main([*base, "--model", "a", "--model", "b", "--prompts", str(bad), "--judge", "oracle:x"]) == 2
    assert not runs.exists() or not any(runs.iterdir())
