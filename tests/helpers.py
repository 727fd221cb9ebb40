"""Small helpers shared by tests in several folders."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def database_held_by_another_process(path: Path) -> Iterator[int]:
    """Another process opens the store at ``path`` (as a running studio would); yields its PID."""
    script = textwrap.dedent(f"""
        import sys
        from annotations.store import Store
        store = Store({str(path)!r})
        print("open", flush=True)
        sys.stdin.read()
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        yield holder.pid
    finally:
        holder.communicate("", timeout=30)
