"""The Arena and Evaluate screens' handlers: blind battles, one vote each, ratings, export, levels."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from annotations.arena import ArenaSettings, Contender, battles, save_settings
from annotations.store import PromptRecord
from annotations.templates import save_template
from studio import arena, judged
from studio.context import StudioContext
from studio.evaluate_tab import export_votes, refresh_boards
from studio.leaderboard import levels_board, tier_of
from studio.render import UserError
from tests.studio.conftest import as_user
from tests.tiny import make_tiny_causal_lm

BOSS, ANA = as_user("boss"), as_user("ana")


@pytest.fixture
def arena_ctx(ctx: StudioContext, tmp_path: Path) -> StudioContext:
    ctx.registry.add(make_tiny_causal_lm(tmp_path / "other", seed=3), name="other")
    save_template(ctx.store, "terse", {"name": "terse", "system": "Be terse.", "template": "Q: {input}"})
    pid = ctx.store.create_project("arena-set", k=2)
    ctx.store.add_prompts(pid, [PromptRecord(f"Tell me about the sea, part {i}.") for i in range(5)])
    contenders = (Contender("tiny", "tiny"), Contender("other", "other"), Contender("tiny + template terse", "tiny", template="terse"))
    save_settings(ctx.store, ArenaSettings(contenders=contenders, prompt_project="arena-set", max_new_tokens=6, max_turns=2))
    return ctx


def _play(ctx: StudioContext, prompt: str, user=ANA, seed: int = 0) -> tuple[dict, list[tuple[str, str]]]:
    """A battle to the point of voting, with every pane the user was shown on the way."""
    state = arena.start_battle(ctx, prompt, user, rng=random.Random(seed))
    shown = list(arena._stream_turn(ctx, state, arena._settings(ctx)))
    state["replied"] = True
    return state, shown


def test_a_blind_battle_names_the_models_only_after_the_vote(arena_ctx: StudioContext) -> None:
    prompt = arena.draw_prompt(arena_ctx, ANA)
    assert prompt.startswith("Tell me about the sea")
    state, shown = _play(arena_ctx, prompt)
    a, b = state["a_contender"], state["b_contender"]
    assert a.label != b.label
    everything = " ".join(pane for panes in shown for pane in panes)
    for label in ("tiny", "other", "terse"):  # no contender's name in anything the user saw
        assert label not in everything.replace("Tell me about the sea", "")
    state, text = arena.vote(arena_ctx, state, "a", ANA)
    assert a.label in text and b.label in text
    (stored,) = battles(arena_ctx.store)
    assert (stored.contender_a, stored.contender_b, stored.vote, stored.annotator) == (a.label, b.label, "a", "ana")
    assert stored.conversation_a[0]["content"] == prompt and stored.conversation_a[-1]["role"] == "assistant"
    assert stored.prompt_source == "project:arena-set" and stored.sampling["a"]["max_new_tokens"] == 6
    assert stored.lineage["a"]["model"] == a.model


def test_a_double_click_stores_one_vote_and_a_vote_cannot_change(arena_ctx: StudioContext) -> None:
    state, _ = _play(arena_ctx, "Hello there")
    arena.vote(arena_ctx, state, "b", ANA)
    arena.vote(arena_ctx, state, "b", ANA)  # the same request again (state before the first reply)
    with pytest.raises(UserError, match="already has your vote"):
        arena.vote(arena_ctx, state, "a", ANA)
    assert [b.vote for b in battles(arena_ctx.store)] == ["b"]


def test_follow_up_turns_and_the_template_contender(arena_ctx: StudioContext) -> None:
    for seed in range(20):  # find a battle with the template variant in it
        state = arena.start_battle(arena_ctx, "Hello", ANA, rng=random.Random(seed))
        if "terse" in state["a_contender"].label + state["b_contender"].label:
            break
    side = "a" if "terse" in state["a_contender"].label else "b"
    messages = arena._model_messages(arena_ctx, arena._settings(arena_ctx), state[f"{side}_contender"], state[f"{side}_conv"])
    assert messages[0] == {"role": "system", "content": "Be terse."} and messages[-1]["content"] == "Q: Hello"
    list(arena._stream_turn(arena_ctx, state, arena._settings(arena_ctx)))
    for s in ("a", "b"):
        state[f"{s}_conv"].append({"role": "user", "content": "And then?"})
    list(arena._stream_turn(arena_ctx, state, arena._settings(arena_ctx)))
    state["replied"] = True
    arena.vote(arena_ctx, state, "tie", ANA)
    (stored,) = battles(arena_ctx.store)
    assert [m["role"] for m in stored.conversation_a] == ["user", "assistant", "user", "assistant"]


def test_a_failing_model_is_reported_by_side_without_its_name(arena_ctx: StudioContext, monkeypatch) -> None:
    state = arena.start_battle(arena_ctx, "Hello", ANA, rng=random.Random(1))

    def broken(name):
        raise RuntimeError(f"cannot load {name}")

    monkeypatch.setattr(arena_ctx.engines, "get", broken)
    list(arena._stream_turn(arena_ctx, state, arena._settings(arena_ctx)))
    assert state["failed"].startswith("Model A could not answer") and state["a_contender"].label not in state["failed"]
    with pytest.raises(UserError, match="failed"):
        arena.vote(arena_ctx, {**state, "replied": True}, "a", ANA)
    assert battles(arena_ctx.store) == []


def test_arena_rules(arena_ctx: StudioContext) -> None:
    with pytest.raises(UserError, match="Type a prompt"):
        arena.start_battle(arena_ctx, "   ", ANA)
    with pytest.raises(UserError, match="more than the limit"):
        arena.start_battle(arena_ctx, "x" * 30_000, ANA)
    with pytest.raises(UserError, match="Start a battle"):
        arena.vote(arena_ctx, {}, "a", ANA)
    with pytest.raises(UserError, match="Not allowed|Only admins"):
        arena.save_arena_settings(arena_ctx, ANA, ["tiny", "other"], None, None, True, "Uniform", 0.7, 16, 2)
    settings = arena._settings(arena_ctx)
    save_settings(arena_ctx.store, ArenaSettings(contenders=settings.contenders, prompt_project="arena-set", allow_typed=False))
    with pytest.raises(UserError, match="draw a prompt"):
        arena.start_battle(arena_ctx, "my own prompt", ANA)
    assert arena.start_battle(arena_ctx, "Tell me about the sea, part 2.", ANA)["source"] == "project:arena-set"


def test_admin_settings_round_trip(arena_ctx: StudioContext) -> None:
    note = arena.save_arena_settings(
        arena_ctx, BOSS, ["tiny", "other", "tiny + template terse"], "other", "project:arena-set", False, "Uniform", 0.5, 32, 3
    )
    assert "3 contenders" in note
    picked, project, typed, sampling, temperature, tokens, turns = arena.settings_values(arena_ctx)
    assert picked == ["tiny", "other", "other + template terse"] and project == "project:arena-set"
    assert (typed, sampling, temperature, tokens, turns) == (False, "Uniform", 0.5, 32, 3)
    with pytest.raises(UserError, match="not a registered"):
        arena.save_arena_settings(arena_ctx, BOSS, ["tiny", "ghost"], None, None, True, "Uniform", 0.7, 16, 2)
    with pytest.raises(UserError):
        arena.save_arena_settings(arena_ctx, BOSS, ["tiny"], None, None, True, "Uniform", 0.7, 16, 2)
    assert arena.settings_values(arena_ctx)[0] == picked  # refused settings changed nothing


def test_uncertain_pairs_are_sampled_more_often(arena_ctx: StudioContext) -> None:
    # tiny vs other has been fought a lot and is settled; the template variant is new
    from annotations.arena import record_vote

    for i in range(30):
        conv = [{"role": "user", "content": f"Hello {i}"}, {"role": "assistant", "content": "hi"}]
        record_vote(
            arena_ctx.store, key=f"k{i}", annotator="ana", contender_a="tiny", contender_b="other", conversation_a=conv,
            conversation_b=conv, vote="a", prompt_source="typed", sampling={"a": {}, "b": {}}, lineage={"a": {}, "b": {}},
        )  # fmt: skip
    rng = random.Random(0)
    pairs = [frozenset(c.label for c in arena.choose_pair(arena_ctx, arena._settings(arena_ctx), rng)) for _ in range(200)]
    settled = pairs.count(frozenset({"tiny", "other"}))
    assert settled < 40, settled  # 1/3 of draws if uniform


def test_boards_export_and_the_exported_pairs_train_a_reward_model(arena_ctx: StudioContext, tiny_encoder_dir: Path, tmp_path) -> None:
    from annotations.arena import record_vote

    rng = random.Random(4)
    labels = ["tiny", "other", "tiny + template terse"]
    strength = {"tiny": 0.0, "other": 1.0, "tiny + template terse": 2.0}
    # each contender writes in its own way, so the votes teach which kind of reply people prefer
    style = {"tiny": "def add(a, b): return a + b", "other": "Numbers 0 1 2 3 4 5", "tiny + template terse": "The sea is wide and deep."}
    for i in range(80):
        a, b = rng.sample(labels, 2)
        vote = "a" if strength[a] + rng.gauss(0, 0.5) > strength[b] + rng.gauss(0, 0.5) else "b"
        conv_a = [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"{style[a]} {i}"}]
        conv_b = [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"{style[b]} {i}"}]
        record_vote(
            arena_ctx.store, key=f"b{i}", annotator="ana", contender_a=a, contender_b=b, conversation_a=conv_a,
            conversation_b=conv_b, vote=vote, prompt_source="typed", sampling={"a": {}, "b": {}}, lineage={"a": {}, "b": {}},
        )  # fmt: skip
    with pytest.raises(UserError, match="Not allowed|Only admins"):
        refresh_boards(arena_ctx, ANA)
    note, table, chart, matrix, judged_table, levels, levels_chart = refresh_boards(arena_ctx, BOSS)
    assert "80 arena votes" in note
    assert list(table["contender"]) == ["tiny + template terse", "other", "tiny"]
    assert chart.count("<circle") == 3 and matrix.count("<rect") == 9
    assert {"tiny", "other"} <= set(levels["model"]) and set(levels["tier"]) == {"L1 base"}
    with pytest.raises(UserError, match="Not allowed|Only admins"):
        export_votes(arena_ctx, False, ANA)
    text = export_votes(arena_ctx, False, BOSS)
    assert "Snapshot" in text
    folder = next(arena_ctx.snapshot_root.iterdir())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["counts"]["pairs"] == 80

    # the same votes that rank the models train the next reward model
    from rlhf.registry import ModelRegistry
    from rlhf.reward import RewardRunConfig, train_reward
    from rlhf.runs import RunDir, run_guard
    from rlhf.scoring import RewardScorer

    registry = ModelRegistry()
    registry.add(tiny_encoder_dir, name="tiny-enc-arena")
    cfg = RewardRunConfig(
        data=str(folder), base_model="tiny-enc-arena", epochs=4, batch_size=8, learning_rate=2e-3, eval_fraction=0.2, register_as="rm-arena"
    )
    run = RunDir.create(tmp_path / "runs", "reward", {})
    with run_guard(run, handle_sigterm=False) as stop:
        metrics = train_reward(cfg, run, stop, registry=registry)
    assert registry.get("rm-arena").kind == "reward-model"
    scorer = RewardScorer.load(registry.resolve("rm-arena"), device="cpu")
    good, bad = scorer.score("q", "The sea is wide and deep. 99"), scorer.score("q", "def add(a, b): return a + b 99")
    assert good > bad and metrics["eval_accuracy"] >= 0.7, (good, bad, metrics)


def test_tiers_from_lineage() -> None:
    assert tier_of({})[0] == "L1 base"
    assert tier_of({}, template="terse") == ("L1 prompted", "template terse")
    assert tier_of({"run": "sft-1", "base_model": "x", "method": "lora"})[0] == "L2 instruction-tuned"
    assert tier_of({"run": "ppo-1", "rewards": [{"type": "model", "model": "rm"}]})[0] == "L3 RLHF"
    assert tier_of({"run": "ppo-1", "rewards": [{"type": "judge", "model": "lm"}]})[0] == "L3 RLAIF"
    assert tier_of({"run": "dpo-1", "method": "dpo", "policy": "x"})[0] == "L3 DPO"


def test_a_judged_comparison_from_the_studio_feeds_the_levels_board(arena_ctx: StudioContext, tmp_path: Path) -> None:
    from tests.studio.test_reward_tab import wait_for

    settings = {"max_prompts": 3, "temperature": 0.0, "max_new_tokens": 4}
    args = (["tiny", "template:terse"], "tiny", "project:arena-set", "AI judge, pairwise (both orders)", "other", settings, "tiny", None)
    yaml_text, _ = judged.preview(arena_ctx, *args)
    assert "contenders" in yaml_text and "template" in yaml_text and "not ready" not in yaml_text
    with pytest.raises(ValueError, match="two contenders"):
        judged.launch(arena_ctx, ["tiny"], *args[1:])
    run_id = judged.launch(arena_ctx, *args)
    run = arena_ctx.launcher.get(run_id)
    wait_for(lambda: not arena_ctx.launcher.state(run).alive, what="the eval run to end")
    assert arena_ctx.launcher.state(run).state == "finished", run.tail_log()
    summary, frame, replies = judged.show_results(arena_ctx, run_id)
    assert "AI judge other" in summary and list(frame["contender"]) == ["tiny + template terse"]
    assert replies.count('class="eval-prompt"') == 3
    table, chart = levels_board(arena_ctx)
    row = table[table["model"] == "tiny + template terse"].iloc[0]
    assert row["tier"] == "L1 prompted" and "vs tiny" in row["judged win rate [95% CI]"]
    assert chart.count("<circle") == 1
