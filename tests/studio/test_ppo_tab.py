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


def test_reward_specs_from_the_form() -> None:
    assert rewards() == [{"type": "function", "function": "tests.rlhf.reward_fns:likes_e", "weight": 1.0}]
    assert rewards(function_weight=0) == []
    mixed = rewards(judge="tiny", judge_weight=0.5, judge_template="Rate: {prompt} / {reply}", reward_model="rm")
    assert [s["type"] for s in mixed] == ["model", "judge", "function"]
    assert mixed[1] == {"type": "judge", "model": "tiny", "weight": 0.5, "template": "Rate: {prompt} / {reply}"}


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
    assert "finished" in summary and plots.count("<svg") == len(ppo_tab.CHARTS) and not alive
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
    assert ctx.launcher.runs() == [] and not ctx.launcher.root.exists()
