"""Where RLHF Studio keeps its per-user files (model cache, registry), and how they are protected.

``STUDIO_HOME`` overrides the default ``~/.cache/rlhf-studio``. Folders the studio creates for
itself (the home, the model cache, run folders) are owner-only (0700) and the files it writes
there owner-only (0600): run folders hold configs, data paths and logs, the cache holds models.

    home = studio_home()                       # created 0700 on first use
    private_dir(home / "models")               # mkdir -p, the new folders 0700
    write_private(path, text)                  # atomically, mode 0600
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) owner-only; an existing folder is left as it is."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=FOLDER_MODE)
        except FileExistsError:
            continue
        os.chmod(folder, FOLDER_MODE)  # mkdir's mode is filtered by the umask; be exact
    if not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a folder")
    return path


def open_private(path: Path, mode: str = "w"):
    """Open a file for writing ("w") or appending ("a"); a new file is created 0600."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    return os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8")


def write_private(path: Path, text: str) -> Path:
    """Replace ``path`` atomically with ``text`` (a temporary file beside it, then rename), mode 0600."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open_private(tmp) as handle:
        handle.write(text)
    tmp.replace(path)
    return path


def studio_home() -> Path:
    """The studio's home folder, created owner-only on first use."""
    return private_dir(Path(os.environ.get("STUDIO_HOME") or Path.home() / ".cache" / "rlhf-studio"))
