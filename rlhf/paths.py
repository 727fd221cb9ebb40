"""Where RLHF Studio keeps its per-user files (model cache, registry).

``STUDIO_HOME`` overrides the default ``~/.cache/rlhf-studio``.
"""

from __future__ import annotations

import os
from pathlib import Path


def studio_home() -> Path:
    """The studio's home folder, created on first use."""
    home = Path(os.environ.get("STUDIO_HOME") or Path.home() / ".cache" / "rlhf-studio")
    home.mkdir(parents=True, exist_ok=True)
    return home
