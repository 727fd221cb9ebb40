"""The PPO screen's handlers with a real training subprocess, and the loop closed.

A project's prompts -> a PPO run launched from the screen -> the registered policy appears in
the chat's model list and writes candidate replies for annotators.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from annotations.store import PromptRecord
from rlhf.generation import SamplingParams
from studio import chat, ppo_tab
from studio.context import StudioContext
from studio.run_monitor import run_detail
from tests.studio.conftest import as_user
from tests.studio.test_reward_tab import data_folder, wait_for

BOSS, ANA = as_user("boss"), as_user("ana")
SETTINGS = {
    "steps": 4,
    "batch_size": 8,
    "minibatch_size": 4,
    "max_new_tokens": 8,
    "learning_rate": 3e-3,
    "register_as": "studio-ppo",
    "check_prompts": 0,
}
FUNCTION = dict.fromkeys(("reward_model", "judge", "judge_template", "similarity"))


def rewards(**overrides) -> list[dict]:
    values = {
        "reward_model": None,
        "reward_model_weight": 1.0,
        "judge": None,
        "judge_weight": 1.0,
        "judge_template": None,
        "function": "tests.rlhf.reward_fns:likes_e",
        "function_weight": 1.0,
        "similarity": None,
        "similarity_weight": 1.0,
    }
    return ppo_tab.reward_specs(**{**values, **overrides})


def test_an_uncertainty_penalty_goes_with_the_reward_model() -> None:
    specs = rewards(reward_model="rm-ens", reward_model_uncertainty=1.5, function=None)
    assert specs == [{"type": "model", "model": "rm-ens", "weight": 1.0, "uncertainty": 1.5}]
    assert "uncertainty" not in rewards(reward_model="rm", function=None)[0]


def test_reward_specs_from_the_form() -> None:
    assert rewards() == [{"type": "function", "function": "tests.rlhf.reward_fns:likes_e", "weight": 1.0}]
    assert rewards(function_weight=0) == []
    mixed = rewards(judge="tiny", judge_weight=0.5, judge_template="Rate: {prompt} / {reply}", reward_model="rm")
    assert [s["type"] for s in mixed] == ["model", "judge", "function"]
    assert mixed[1] == {"type": "judge", "model": "tiny", "weight": 0.5, "template": "Rate: {prompt} / {reply}"}


def test_heldout_judge_specs_from_the_form() -> None:
    assert ppo_tab.judge_specs(None, None, "  ") == []
    assert ppo_tab.judge_specs("rm-b", "tiny", "pkg.mod:fn") == [
        {"type": "model", "model": "rm-b", "weight": 1.0},
        {"type": "judge", "model": "tiny", "weight": 1.0},
        {"type": "function", "function": "pkg.mod:fn", "weight": 1.0},
    ]


def test_the_judge_chart_is_drawn_only_for_a_run_with_a_judge() -> None:
    from studio.run_monitor import charts_html

    trained = [{"step": s, "reward_mean": 0.1 * s, "kl": 0.5 * s} for s in (1, 2, 3)]
    held_out = [{"step": s, "eval_reward": 1.0 + 0.2 * s, "eval_kl": 0.4 * s} for s in (0, 2, 3)]
    plain = charts_html(trained + held_out, ppo_tab.CHARTS)
    assert plain.count('class="line-chart"') == 6 and "judge over KL" not in plain
    judged = [{**e, "eval_judge": -3.0 - 0.1 * e["step"]} for e in held_out]
    html = charts_html(trained + judged, ppo_tab.CHARTS)
    assert html.count('class="line-chart"') == 7 and "Held-out: training reward and judge over KL" in html
    assert "eval_reward - start" in html and "eval_judge - start" in html and "held-out KL to the reference" in html
    [chart] = [c for c in ppo_tab.CHARTS if c.only_with]
    from studio.run_monitor import series

    lines = series(judged, chart.keys, chart.x, chart.from_start)
    flat = {name: [v for point in points for v in point] for name, points in lines.items()}
    assert flat["eval_reward - start"] == pytest.approx([0.0, 0.0, 0.8, 0.4, 1.2, 0.6])  # (KL, gain since step 0)
    assert flat["eval_judge - start"] == pytest.approx([0.0, 0.0, 0.8, -0.2, 1.2, -0.3])


def test_the_form_offers_the_heldout_judge_and_early_stopping(ctx: StudioContext) -> None:
    screen = ppo_tab.build(ctx)
    ids = {getattr(block, "elem_id", None) for block in screen.blocks.values()}
    assert {"ppo-heldout-rm", "ppo-heldout-judge", "ppo-heldout-fn", "cfg-PPORunConfig-early_stop_patience"} <= ids
    assert "cfg-PPORunConfig-heldout_judge" not in ids  # edited with its own pickers, not as text
    settings = {
        **SETTINGS,
        "heldout_judge": ppo_tab.judge_specs(None, None, "tests.rlhf.reward_fns:pays_for_brevity"),
        "early_stop_patience": 2,
    }
    yaml_text, _ = ppo_tab.preview(ctx, "project:x", "tiny", rewards(), settings)
    assert "heldout_judge:\n- type: function" in yaml_text and "early_stop_patience: 2" in yaml_text


def test_ppo_from_a_project_closes_the_loop(ctx: StudioContext) -> None:
    pid = ctx.store.create_project("chatbot", k=2, min_submitted=1)
    ctx.store.add_prompts(pid, [PromptRecord(f"tell me about the sea, part {i}") for i in range(20)])
    [(label, value)] = ppo_tab.prompt_choices(ctx)
    assert value == "project:chatbot" and "20 prompts" in label
    yaml_text, command = ppo_tab.preview(ctx, value, "tiny", rewards(), SETTINGS)
    assert "rlhf-studio train ppo --config run.yaml" in command and "likes_e" in yaml_text and "exported" in command

    run_id = ppo_tab.launch(ctx, value, "tiny", rewards(), SETTINGS, BOSS)
    run = ctx.launcher.get(run_id)
    wait_for(lambda: not ctx.launcher.state(run).alive, what="the PPO run to end")
    assert ctx.launcher.state(run).state == "finished", run.tail_log()
    exported = Path(run.config()["prompts"])
    assert exported.is_file() and len(exported.read_text().splitlines()) == 20  # the run read a file, not the database
    steps = [e for e in run.events() if "reward_mean" in e]
    assert [e["step"] for e in steps] == [1, 2, 3, 4] and all("kl" in e and "entropy" in e for e in steps)
    summary, bar, plots, log, alive = run_detail(ctx.launcher, run_id, ppo_tab.CHARTS)
    always = [c for c in ppo_tab.CHARTS if not c.only_with]
    assert "finished" in summary and plots.count("<svg") == len(always) == 6 and not alive  # no judge: no judge chart
    table, warnings = ppo_tab.samples_and_warnings(ctx, run_id)
    assert len(table) > 0 and set(table.columns) == {"step", "prompt", "reply", "reward", "ended"}

    # The loop closed: the tuned policy is offered in the chat and writes candidates for annotators.
    assert "studio-ppo" in chat.model_choices(ctx)
    job = ctx.jobs.start(pid, ["studio-ppo", "tiny"], SamplingParams(temperature=1.0, max_new_tokens=6, seed=2))
    ctx.jobs.wait(job)
    assert job.state == "done", job.error
    models = {r.model for p in ctx.store.prompts(pid) for r in ctx.store.replies(p.id)}
    assert models == {"studio-ppo", "tiny"}


def test_bad_ppo_launches_are_refused(ctx: StudioContext, tiny_encoder_dir: Path) -> None:
    ctx.registry.add(tiny_encoder_dir, name="tiny-enc")
    data = data_folder(ctx)
    (data / "p.txt").write_text("hello\n")
    (data / "no-prompt.jsonl").write_text('{"question": "where?"}\n')
    good = str(data / "p.txt")
    cases = [
        ((None, "tiny", rewards()), "Choose the prompts"),
        ((good, "tiny", []), "at least one reward source"),
        ((good, "tiny-enc", rewards()), "must be a causal LM"),
        ((good, "tiny", rewards(reward_model="ghost")), "unknown model"),
        ((good, "tiny", rewards(reward_model="tiny")), "rewards\\[0\\] \\(model\\): tiny is a causal-lm model; it must be reward-model"),
        ((str(data / "missing.jsonl"), "tiny", rewards()), "does not exist"),
        ((str(data / "no-prompt.jsonl"), "tiny", rewards()), "no-prompt.jsonl:1: no 'prompt', 'messages' or 'instruction' field"),
        (("project:nope", "tiny", rewards()), "nope"),
    ]
    for (prompts, policy, specs), message in cases:
        with pytest.raises(gr.Error, match=message):
            ppo_tab.launch(ctx, prompts, policy, specs, SETTINGS, BOSS)
    with pytest.raises(gr.Error, match="admin"):
        ppo_tab.launch(ctx, good, "tiny", rewards(), SETTINGS, ANA)
    with pytest.raises(gr.Error, match="minibatch_size"):
        ppo_tab.launch(ctx, good, "tiny", rewards(), {**SETTINGS, "minibatch_size": 64}, BOSS)
    with pytest.raises(gr.Error, match="unknown model 'ghost-value'"):
        ppo_tab.launch(ctx, good, "tiny", rewards(), {**SETTINGS, "value_model": "ghost-value"}, BOSS)
    judges = [
        (ppo_tab.judge_specs("ghost-rm", None, None), "unknown model 'ghost-rm'"),
        (ppo_tab.judge_specs(None, None, "no_colon"), "heldout_judge\\[0\\]: function must look like"),
        ([], "early_stop_patience needs a heldout_judge"),
    ]
    for judge, message in judges:
        with pytest.raises(gr.Error, match=message):
            ppo_tab.launch(ctx, good, "tiny", rewards(), {**SETTINGS, "heldout_judge": judge, "early_stop_patience": 2}, BOSS)
    assert ctx.launcher.runs() == [] and not ctx.launcher.root.exists()
