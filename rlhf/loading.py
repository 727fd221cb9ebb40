"""Load registered models onto the right device, ready for generation or scoring.

    model, tokenizer = load_causal_lm("smollm2-135m-instruct")

Tokenizers come back with a pad token (the end-of-text token when the model has none) and
left padding, which batched generation needs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlhf.device import default_dtype, pick_device
from rlhf.modelfiles import ModelError
from rlhf.registry import ModelRegistry


def load_tokenizer(folder: Path, padding_side: str = "left"):
    """The folder's tokenizer with a pad token and the requested padding side."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"the tokenizer in {folder} has neither a pad nor an end token; add one and save it again")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_causal_lm(
    name_or_path: str,
    registry: ModelRegistry | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
):
    """(model in eval mode on its device, tokenizer) for a registered name or a folder."""
    from transformers import AutoModelForCausalLM

    registry = registry or ModelRegistry()
    folder = registry.resolve(name_or_path)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    tokenizer = load_tokenizer(folder)
    if (folder / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(str(folder), dtype=dtype or default_dtype(dev))
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype or default_dtype(dev))
        except (OSError, ValueError) as exc:
            raise ModelError(f"could not load {name_or_path!r} from {folder} as a causal LM: {exc}") from exc
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(dev).eval(), tokenizer
