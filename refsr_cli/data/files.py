"""Writing files so that a reader or a crash never leaves half of one: atomic writes, JSON documents."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` and rename the result over ``path`` so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix + ".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp creates 0600 files; outputs get the permissions any new file would (umask applied).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, data, **dumps) -> None:
    """Write ``data`` as JSON (``json.dumps`` options in ``dumps``) with a final newline, atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, **dumps) + "\n"))


def read_json(path: str | os.PathLike) -> dict | None:
    """The JSON object in ``path``; ``None`` when the file is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
