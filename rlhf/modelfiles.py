"""Inspect and validate a local Hugging Face model folder without loading its weights.

Reads ``config.json``, the safetensors headers (to count parameters) and the model card's
front matter (for the licence), and says clearly what is missing or corrupt.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

ENCODER_ARCHS = ("ForMaskedLM", "Model", "ForSequenceClassification", "ForTokenClassification")
ENCODER_TYPES = {"bert", "roberta", "distilbert", "deberta", "deberta-v2", "electra", "xlm-roberta", "mpnet"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.txt", "vocab.json")


class ModelError(Exception):
    """A model is unknown, missing or unusable; the message says which and what to do."""


@dataclass(frozen=True)
class FolderInfo:
    """What a model folder holds, read from its files."""

    kind: str  # "causal-lm" | "encoder" | "reward-model"
    architecture: str
    model_type: str
    params: int | None
    licence: str
    is_peft_adapter: bool


def _safetensors_params(path: Path) -> int:
    """Count the parameters in one safetensors file from its JSON header."""
    try:
        with path.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            if size > 100_000_000:
                raise ValueError("header length is implausible")
            header = json.loads(handle.read(size))
    except (OSError, ValueError, struct.error) as exc:
        raise ModelError(f"{path} is not a readable safetensors file ({exc}); copy the model folder again") from exc
    total = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in meta["shape"]:
            count *= dim
        total += count
    return total


def read_licence(folder: Path) -> str:
    """The licence from the model card's YAML front matter, else from a LICENSE file."""
    card = folder / "README.md"
    if card.is_file():
        text = card.read_text(errors="replace")
        front = re.match(r"^---\s*\n(.*?)\n---", text, re.S)
        if front:
            found = re.search(r"^licen[cs]e:\s*['\"]?([^'\"\n]+)", front.group(1), re.M)
            if found:
                return found.group(1).strip()
    for name in ("LICENSE", "LICENSE.txt", "LICENCE"):
        lic = folder / name
        if lic.is_file():
            head = lic.read_text(errors="replace")[:400].lower()
            for marker, spdx in (("apache license", "apache-2.0"), ("mit license", "mit"), ("bsd", "bsd")):
                if marker in head:
                    return spdx
            return "see LICENSE"
    return "unknown"


def classify(config: dict, heads: int = 1) -> tuple[str, str]:
    """(kind, architecture) of a transformers config; ``heads``: a reward ensemble's outputs."""
    archs = config.get("architectures") or []
    arch = archs[0] if archs else ""
    model_type = config.get("model_type", "")
    if arch.endswith("ForSequenceClassification") and config.get("num_labels", len(config.get("id2label", {}))) == heads:
        return "reward-model", arch
    if arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel"):
        return "causal-lm", arch
    if model_type in ENCODER_TYPES or arch.endswith(ENCODER_ARCHS):
        return "encoder", arch
    return "causal-lm", arch


def _reward_heads(folder: Path) -> int:
    """Outputs of a reward model as its reward_format.json records them (an ensemble has several)."""
    try:
        return int(json.loads((folder / "reward_format.json").read_text()).get("heads", 1))
    except (OSError, ValueError, TypeError, AttributeError):
        return 1


def inspect_folder(folder: Path) -> FolderInfo:
    """Validate ``folder`` as a loadable model and describe it; raise ModelError if not."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist; pass the path of a local Hugging Face model folder")
    adapter_cfg = folder / "adapter_config.json"
    if adapter_cfg.is_file():
        try:
            adapter = json.loads(adapter_cfg.read_text())
        except ValueError as exc:
            raise ModelError(f"{adapter_cfg} is not valid JSON ({exc}); the adapter folder is corrupt") from exc
        weights = list(folder.glob("adapter_model.safetensors")) + list(folder.glob("adapter_model.bin"))
        if not weights:
            raise ModelError(f"{folder} has adapter_config.json but no adapter_model weights; the adapter was not saved completely")
        params = sum(_safetensors_params(w) for w in weights if w.suffix == ".safetensors") or None
        kind = "causal-lm" if adapter.get("task_type", "CAUSAL_LM") == "CAUSAL_LM" else "reward-model"
        return FolderInfo(kind, "peft-adapter", adapter.get("peft_type", ""), params, read_licence(folder), True)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ModelError(f"{folder} has no config.json, so it is not a Hugging Face model folder; save the model with save_pretrained()")
    try:
        config = json.loads(cfg_path.read_text())
    except ValueError as exc:
        raise ModelError(f"{cfg_path} is not valid JSON ({exc}); the model folder is corrupt, copy it again") from exc
    if not isinstance(config, dict) or "model_type" not in config:
        raise ModelError(f"{cfg_path} has no model_type; the model folder is corrupt, copy it again")
    st_files = sorted(folder.glob("*.safetensors"))
    bin_files = sorted(folder.glob("pytorch_model*.bin"))
    if not st_files and not bin_files:
        raise ModelError(
            f"{folder} has a config.json but no weights (*.safetensors or pytorch_model*.bin); the download or save is incomplete"
        )
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelError(f"{folder} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the tokenizer into the same folder")
    params = sum(_safetensors_params(f) for f in st_files) if st_files else None
    kind, arch = classify(config, _reward_heads(folder))
    return FolderInfo(kind, arch, config["model_type"], params, read_licence(folder), False)
