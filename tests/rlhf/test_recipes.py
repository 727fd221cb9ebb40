"""Every recipe in recipes/ is a valid config of its kind (they are copied and edited by users)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf.config import load_config
from rlhf.dpo import DPORunConfig
from rlhf.evaluation import EvalRunConfig
from rlhf.kto import KTORunConfig
from rlhf.online_rl import GRPORunConfig, RLOORunConfig
from rlhf.ppo import PPORunConfig
from rlhf.reward import RewardRunConfig
from rlhf.sft import SFTRunConfig

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
KINDS = {
    "reward": RewardRunConfig,
    "ppo": PPORunConfig,
    "sft": SFTRunConfig,
    "dpo": DPORunConfig,
    "eval": EvalRunConfig,
    "grpo": GRPORunConfig,
    "rloo": RLOORunConfig,
    "kto": KTORunConfig,
}


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_recipe_loads(path: Path) -> None:
    cls = KINDS[path.name.split("-")[0]]
    cfg = load_config(cls, path)
    assert type(cfg) is cls and "# " in path.read_text()  # help comments kept


def test_there_is_a_recipe_per_kind() -> None:
    assert {p.name.split("-")[0] for p in RECIPES.glob("*.yaml")} == set(KINDS)


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_recipe_names_every_setting(path: Path) -> None:
    """A recipe shows every key of its kind, so a default changed in code cannot hide behind an old file."""
    import dataclasses

    import yaml

    cls = KINDS[path.name.split("-")[0]]
    assert set(yaml.safe_load(path.read_text())) == {f.name for f in dataclasses.fields(cls)}
