"""Device and dtype selection: CUDA when present, otherwise the CPU.

Everything that places a model goes through :func:`pick_device`, so no code path assumes
the CPU. ``STUDIO_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``) overrides the automatic choice.
"""

from __future__ import annotations

import os

import torch


def pick_device(requested: str | None = None) -> torch.device:
    """Resolve ``requested`` ("auto", "cpu", "cuda", "cuda:N") to a usable device."""
    choice = (requested or os.environ.get("STUDIO_DEVICE") or "auto").lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} was asked for but no CUDA device is available; use 'cpu' or 'auto'")
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that support it (half the memory, same range), float32 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32
