"""Shared fixtures: offline mode for every test, a private STUDIO_HOME, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Set before anything imports huggingface_hub, which reads these once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs with the hub switched off, so any download attempt fails loudly."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One STUDIO_HOME for the session (the SmolLM2 conversion is done at most once in it)."""
    home = tmp_path_factory.mktemp("studio-home")
    os.environ["STUDIO_HOME"] = str(home)
    return home


@pytest.fixture
def studio_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty STUDIO_HOME for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("STUDIO_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny import make_tiny_causal_lm

    return make_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny-lm")


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny import make_tiny_encoder

    return make_tiny_encoder(tmp_path_factory.mktemp("models") / "tiny-encoder")


@pytest.fixture(scope="session")
def tiny_lm(tiny_lm_dir: Path):
    """(model, tokenizer) of the tiny causal LM, loaded once."""
    from rlhf.loading import load_causal_lm

    return load_causal_lm(str(tiny_lm_dir), device="cpu")


@pytest.fixture(scope="session")
def smollm2_dir(session_home: Path) -> Path:
    """The real SmolLM2, converted from its packaged GGUF into the session's home."""
    from rlhf.registry import ModelRegistry

    return ModelRegistry(session_home).resolve("smollm2-135m-instruct")
