"""Turn a GGUF file into a normal safetensors model folder, once.

transformers dequantizes GGUF on every load (about 18 s for SmolLM2); converting once into a
cache folder makes later loads take about 2 s. The folder appears atomically: a crash during
conversion leaves no half-written cache behind.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from rlhf.paths import private_dir

MARKER = "studio-source.json"


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize ``gguf_path`` into ``out_dir`` (float32 safetensors + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file {gguf_path} not found")
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    private_dir(tmp)  # the model cache is owner-only (0700), whatever the process's umask
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    # The weights are already dequantized; without this save_pretrained would record a GGUF
    # quantization config and a later load would try to re-read the GGUF file.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    stat = gguf_path.stat()
    (tmp / MARKER).write_text(json.dumps({"gguf": str(gguf_path), "size": stat.st_size}))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def is_converted(gguf_path: Path, out_dir: Path) -> bool:
    """True when ``out_dir`` holds a finished conversion of this exact GGUF file."""
    marker = out_dir / MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except ValueError:
        return False
    return info.get("size") == Path(gguf_path).stat().st_size
