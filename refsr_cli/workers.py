"""Worker processes (joblib/loky) that end with the command that started them.

A loky worker outlives a parent killed by a signal: it finishes its task and then waits five minutes for
more, holding memory and a core. :func:`exit_with` — called at the start of each task — starts, once per
worker, a thread that ends the worker as soon as it is handed to another parent.
"""
from __future__ import annotations

import os
import threading
import time

_watched: set[int] = set()


def exit_with(parent: int) -> None:
    """In a worker process: exit at once when ``parent`` (the command's process) is gone. Nothing when
    called in ``parent`` itself (a run with one job)."""
    if parent == os.getpid() or parent in _watched:
        return
    _watched.add(parent)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="refsr-exit-with-parent", daemon=True).start()
