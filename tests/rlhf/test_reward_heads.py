"""Reward models as frozen bases with fitted heads (method head), ensembles and their uncertainty."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from rlhf.features import FrozenFeatures, fit_bradley_terry, fit_heads, pair_accuracy
from rlhf.preference_data import read_pairs, split_pairs
from rlhf.registry import ModelRegistry
from rlhf.reward import RewardRunConfig, evaluate_pairs, train_reward
from rlhf.runs import RunDir, run_guard
from rlhf.scoring import FORMAT_FILE, RewardScorer, encode_pair, reply_start
from rlhf.uncertainty import pair_uncertainty, rank_by_uncertainty, uncertainties
from tests.rlhf import test_reward
from tests.rlhf.test_reward import _train, separable_pairs

pairs_file = test_reward.pairs_file  # the same 96 separable pairs (a fixture)


@pytest.mark.parametrize("model_fixture", ["tiny_encoder_dir", "tiny_lm_dir"])
def test_heads_learn_the_preference_and_save_as_an_ordinary_classifier(
    tmp_path: Path, studio_home: Path, pairs_file: Path, model_fixture: str, request: pytest.FixtureRequest
) -> None:
    base_dir = request.getfixturevalue(model_fixture)
    registry = ModelRegistry()
    registry.add(base_dir, name="tiny-base")
    cfg = RewardRunConfig(data=str(pairs_file), base_model="tiny-base", method="head", heads=3, max_length=32, eval_fraction=0.25)
    _, held_out = split_pairs(read_pairs(pairs_file), cfg.eval_fraction, cfg.seed)
    run, metrics = _train(tmp_path, cfg, registry)
    assert metrics["train_pairs"] == 72 and metrics["eval_pairs"] == 24 and metrics["heads"] == 3
    assert metrics["eval_accuracy"] >= 0.9 and metrics["eval_mean_margin"] > 0
    assert run.status()["state"] == "finished"
    assert any(e.get("phase") == "features" and e["texts_done"] == e["step"] == e["max_steps"] == 144 for e in run.events())

    from transformers import AutoModelForSequenceClassification

    saved = AutoModelForSequenceClassification.from_pretrained(run.checkpoint_dir)
    fresh = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=3)
    head = "score" if hasattr(saved, "score") else "classifier"
    # the heads were fitted (they are not the random initialisation) and the base stayed frozen
    assert not torch.allclose(getattr(saved, head).weight, getattr(fresh, head).weight)
    body = saved.base_model_prefix
    for (name, a), b in zip(getattr(saved, body).named_parameters(), getattr(fresh, body).parameters(), strict=True):
        assert torch.equal(a, b), name

    fmt = json.loads((run.checkpoint_dir / FORMAT_FILE).read_text())
    assert fmt["heads"] == 3 and len(fmt["head_offsets"]) == 3
    scorer = RewardScorer.load(run.checkpoint_dir)
    assert scorer.heads == 3
    # the reloaded model gives the run's own figures, and each head is centred on its training texts
    assert evaluate_pairs(scorer, held_out)["mean_margin"] == pytest.approx(metrics["eval_mean_margin"], abs=1e-4)
    train, _ = split_pairs(read_pairs(pairs_file), cfg.eval_fraction, cfg.seed)
    heads = scorer.score_heads([(p.prompt, t) for p in train for t in (p.chosen, p.rejected)])
    assert heads.mean(0).abs().max() < 1e-3
    scores, spread = scorer.score_spread([("capital sea", "France good good"), ("capital sea", "France bad bad")])
    assert scores[0] > scores[1] and all(s > 0 for s in spread)
    assert registry.get(metrics["registered_as"]).kind == "reward-model"


def test_a_score_is_the_features_times_the_head(tmp_path: Path, studio_home: Path, tiny_lm_dir: Path, pairs_file: Path) -> None:
    """What the extractor reads is exactly what the classifier reads (last real token of a decoder)."""
    registry = ModelRegistry()
    registry.add(tiny_lm_dir, name="tiny-lm")
    cfg = RewardRunConfig(
        data=str(pairs_file), base_model="tiny-lm", method="head", pooling="cls", l2=0.01, max_length=40, eval_fraction=0.25
    )
    run, _ = _train(tmp_path, cfg, registry)
    scorer = RewardScorer.load(run.checkpoint_dir)
    extractor = FrozenFeatures.of_classifier(scorer.model, scorer.tokenizer, {"max_length": 40, **cfg.reading}, scorer.device)
    texts = [("a b", "good good"), ("longer prompt " * 3, "bad"), ("x", "a reply of several words good")]
    with torch.no_grad():
        expected = extractor.features(texts) @ scorer.model.score.weight.T - scorer.offsets
    assert torch.allclose(scorer.score_heads(texts), expected, atol=1e-4)


def test_reply_mean_heads_score_through_the_saved_model(tmp_path: Path, studio_home: Path, tiny_lm_dir: Path, pairs_file: Path) -> None:
    registry = ModelRegistry()
    registry.add(tiny_lm_dir, name="tiny-lm")
    cfg = RewardRunConfig(
        data=str(pairs_file), base_model="tiny-lm", method="head", heads=2, pooling="reply_mean", prompt_format="chat",
        max_prompt_tokens=24, max_reply_tokens=16, max_length=64, eval_fraction=0.25,
    )  # fmt: skip
    _, held_out = split_pairs(read_pairs(pairs_file), cfg.eval_fraction, cfg.seed)
    run, metrics = _train(tmp_path, cfg, registry)
    assert metrics["eval_accuracy"] >= 0.9
    assert json.loads((run.checkpoint_dir / FORMAT_FILE).read_text())["pooling"] == "reply_mean"
    scorer = RewardScorer.load(run.checkpoint_dir)
    assert scorer.pooling == "reply_mean" and scorer.reading["prompt_format"] == "chat"
    assert evaluate_pairs(scorer, held_out)["mean_margin"] == pytest.approx(metrics["eval_mean_margin"], abs=1e-4)
    # an extractor reading the saved model's way gives vectors of the head's width
    extractor = FrozenFeatures.of_classifier(scorer.model, scorer.tokenizer, {"max_length": 64, **cfg.reading}, pooling="reply_mean")
    with torch.no_grad():
        alone = extractor.features([("a b", "good good")])
    assert alone.shape[1] == scorer.model.config.hidden_size
    with pytest.raises(ValueError, match="reply_mean needs method head"):
        RewardRunConfig(data="x", method="lora", pooling="reply_mean")


def test_chat_format_keeps_the_last_turns_and_the_reply_start(tiny_lm_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    assert tok.chat_template
    prompt = "User: " + "old question " * 30 + "\n\nAssistant: old answer\n\nUser: the last question"
    reply = "the answer " * 20
    ids = encode_pair(tok, prompt, reply, 512, prompt_format="chat", max_prompt_tokens=24, max_reply_tokens=10)
    text = tok.decode(ids)
    assert "last question" in text and "old question" not in text and "old answer" not in text
    start = reply_start(tok, prompt, reply, 512, prompt_format="chat", max_prompt_tokens=24, max_reply_tokens=10)
    assert len(ids) - start == 11  # 10 reply tokens and the end token
    assert tok.decode(ids[start:-1]).strip().startswith("the answer")
    # the transcript format is unchanged
    assert encode_pair(tok, prompt, reply, 512) == encode_pair(tok, prompt, reply, 512, prompt_format="transcript")


def test_bad_head_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="heads"):
        RewardRunConfig(data="x", heads=0)
    with pytest.raises(ValueError, match="prompt_format"):
        RewardRunConfig(data="x", prompt_format="markdown")
    with pytest.raises(ValueError, match="l2"):
        RewardRunConfig(data="x", method="head", l2=-1)
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        RewardRunConfig(data="x", max_prompt_tokens=-5)


def test_bradley_terry_fit_recovers_a_known_direction() -> None:
    gen = torch.Generator().manual_seed(0)
    truth = torch.randn(8, generator=gen)
    diff = torch.randn(2000, 8, generator=gen)
    # sample labels from the BT model; flip the rows where the "rejected" side won
    wins = torch.rand(2000, generator=gen) < torch.sigmoid(diff @ truth)
    diff = torch.where(wins[:, None], diff, -diff)
    w = fit_bradley_terry(diff, l2=1e-4)
    assert torch.nn.functional.cosine_similarity(w, truth, dim=0) > 0.98
    assert pair_accuracy(diff @ w) > 0.75
    # bootstrap heads differ (so their spread is an uncertainty) and all point the same way
    fitted = fit_heads(diff, torch.zeros_like(diff), heads=4, l2=1e-3, seed=1)
    assert fitted["weight"].shape == (4, 8) and not torch.allclose(fitted["weight"][0], fitted["weight"][1])
    assert all(torch.nn.functional.cosine_similarity(row, truth, dim=0) > 0.95 for row in fitted["weight"])


def test_bald_is_high_where_heads_disagree_and_zero_where_they_agree() -> None:
    agree = pair_uncertainty(torch.tensor([[2.0, 2.0, 2.0]]), torch.tensor([[0.0, 0.0, 0.0]]))
    disagree = pair_uncertainty(torch.tensor([[4.0, -4.0, 4.0]]), torch.tensor([[0.0, 0.0, 0.0]]))
    close = pair_uncertainty(torch.tensor([[0.1, 0.1, 0.1]]), torch.tensor([[0.0, 0.0, 0.0]]))
    assert agree.item() == pytest.approx(0, abs=1e-6) and close.item() == pytest.approx(0, abs=1e-6)
    assert disagree.item() > 0.2
    # one head: plain entropy, highest for a coin flip
    assert pair_uncertainty(torch.tensor([[0.0]]), torch.tensor([[0.0]])).item() == pytest.approx(0.6931, abs=1e-3)


class _Table:
    """A stand-in scorer whose heads' scores are a lookup table (to check the bookkeeping only)."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def score_heads(self, pairs):
        return torch.tensor([self.table[reply] for _, reply in pairs])


def test_prompts_are_ranked_by_how_much_the_heads_disagree() -> None:
    scorer = _Table({"a": [1, 1, 1], "b": [0, 0, 0], "c": [3, -3, 3], "d": [0, 0, 0], "e": [5, 5, 5]})
    items = [("p1", ["a", "b"]), ("p2", ["c", "d", "e"]), ("p3", ["a"])]
    values = uncertainties(scorer, items)
    assert values[2] == 0.0 and values[1] > values[0] >= 0
    assert rank_by_uncertainty(scorer, items) == [1, 0, 2]


def test_stopping_during_feature_reading_registers_nothing(tmp_path: Path, studio_home: Path, tiny_encoder_dir: Path) -> None:
    registry = ModelRegistry()
    registry.add(tiny_encoder_dir, name="tiny-enc")
    rows = separable_pairs(200, seed=random.Random(3).randint(0, 99))
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = RewardRunConfig(data=str(path), base_model="tiny-enc", method="head", max_length=32, register_as="never")
    run = RunDir.create(tmp_path / "runs", "reward", {})
    with run_guard(run, handle_sigterm=False) as stop:
        stop.set()
        metrics = train_reward(cfg, run, stop, registry=registry)
    assert metrics["stopped_early"] and "registered_as" not in metrics
    assert "never" not in registry.names()


def test_ppo_reward_source_pays_the_mean_less_the_spread(
    tmp_path: Path, studio_home: Path, tiny_encoder_dir: Path, pairs_file: Path
) -> None:
    from rlhf.rewards import RewardSpecError, build_reward, check_specs

    registry = ModelRegistry()
    registry.add(tiny_encoder_dir, name="tiny-enc")
    _, ensemble = _train(
        tmp_path, RewardRunConfig(data=str(pairs_file), base_model="tiny-enc", method="head", heads=4, max_length=32), registry
    )
    _, single = _train(
        tmp_path, RewardRunConfig(data=str(pairs_file), base_model="tiny-enc", method="head", heads=1, max_length=32), registry
    )
    prompts, replies = ["capital sea", "sea light"], ["France good good", "sugar bad bad"]
    plain = build_reward([{"type": "model", "model": ensemble["registered_as"]}], registry)
    penalised = build_reward([{"type": "model", "model": ensemble["registered_as"], "uncertainty": 2.0}], registry)
    total, parts = penalised(prompts, replies)
    base_total, _ = plain(prompts, replies)
    spread = parts[f"model:{ensemble['registered_as']} spread"]
    assert all(s > 0 for s in spread)
    assert total == pytest.approx([b - 2 * s for b, s in zip(base_total, spread, strict=True)], abs=1e-5)
    with pytest.raises(RewardSpecError, match="one head"):
        build_reward([{"type": "model", "model": single["registered_as"], "uncertainty": 1.0}], registry)
    with pytest.raises(RewardSpecError, match="uncertainty"):
        check_specs([{"type": "model", "model": "x", "uncertainty": -1}])
    with pytest.raises(RewardSpecError, match="unknown key"):
        check_specs([{"type": "function", "function": "a:b", "uncertainty": 1}])


@pytest.mark.slow
def test_the_default_recipe_on_the_real_smollm2(tmp_path: Path, studio_home: Path) -> None:
    """The default reward config (frozen SmolLM2 in its chat template, five reply-mean heads) learns
    a plain preference from 24 pairs, and the saved ensemble scores with a spread."""
    rng = random.Random(0)
    topics = ["the weather", "a recipe for soup", "how tides work", "learning to swim", "the history of tea"]
    rows = []
    for i in range(32):
        topic = rng.choice(topics)
        rows.append(
            {
                "prompt": f"User: Can you tell me about {topic}? ({i})",
                "chosen": f"Of course. Here is a short, friendly explanation of {topic}, with one useful tip.",
                "rejected": "No. Figure it out yourself, idiot.",
            }
        )
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = RewardRunConfig(data=str(path), eval_fraction=0.25, register_as="rm-default")
    assert (cfg.base_model, cfg.method, cfg.heads, cfg.prompt_format) == ("smollm2-135m-instruct", "head", 5, "chat")
    run, metrics = _train(tmp_path, cfg, ModelRegistry())
    assert metrics["eval_accuracy"] == 1.0 and metrics["eval_mean_margin"] > 0
    scorer = RewardScorer.load(run.checkpoint_dir)
    scores, spread = scorer.score_spread([("User: hi", "Hello! How can I help you today?"), ("User: hi", "Go away, idiot.")])
    assert scores[0] > scores[1] and all(s > 0 for s in spread)
