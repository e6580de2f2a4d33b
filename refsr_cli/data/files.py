"""Writing files so that a reader or a crash never leaves half of one: atomic writes, JSON documents,
the debris a killed writer leaves, output folders proved writable, a lock that dies with its holder."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Collection, Iterator

from refsr_cli.errors import RefsrError


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


def remove_temporaries(folder: str | os.PathLike, names: Collection[str] | None = None) -> None:
    """Remove the temporary files :func:`atomic_write` left in ``folder`` for the files ``names`` (``None``:
    for any file) — the debris of a writer killed before its rename. Only for files nobody else may be
    writing now (see the callers). One listing of the folder, however many names."""
    with os.scandir(folder) as entries:
        for entry in entries:
            target = _temporary_target(entry.name)
            if target is not None and (names is None or target in names) and entry.is_file(follow_symlinks=False):
                Path(entry.path).unlink(missing_ok=True)


def _temporary_target(name: str) -> str | None:
    """``a_sr.png`` for ``.a_sr.k3j_x9a1.png.tmp``, the name of :func:`atomic_write`'s temporary file
    (mkstemp's random part holds no dot); ``None`` for any other name."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    base, extension = os.path.splitext(name[1:-len(".tmp")])
    stem, dot, random = base.rpartition(".")
    return stem + extension if dot and stem and random else None


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


PROBE_PREFIX = ".refsr-probe."   # check_writable_dir's empty test file, removed at once


def check_writable_dir(folder: str | os.PathLike, what: str = "output directory") -> None:
    """Create ``folder`` and prove a file can be written in it, so that a bad output path fails in one line
    before any work rather than after it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=folder)
        os.close(fd)
        Path(probe).unlink(missing_ok=True)  # another run may have cleared it as debris already
    except (FileExistsError, NotADirectoryError):
        raise RefsrError(f"{folder}: {what} is not writable (it or a folder above it is a file)") from None
    except OSError as exc:
        raise RefsrError(f"{folder}: {what} is not writable ({exc.strerror or exc})") from None


@contextmanager
def folder_lock(folder: str | os.PathLike, busy: str | None = None,
                waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` itself (``flock`` on its descriptor) for the ``with`` block.

    Waits for another holder to let go (calling ``waiting()`` first, e.g. to say so); with ``busy`` (what
    the holder is doing, for the message) it does not wait but raises :class:`RefsrError` naming the
    folder. No lock file: the kernel drops the lock when its holder exits, even by kill -9, so nothing is
    left to block a later run or to clean up. Without ``flock`` (Windows, some network filesystems) it is
    best effort: the block runs unlocked.
    """
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if busy:
                raise RefsrError(f"{folder}: in use — {busy}") from None
            if waiting is not None:
                waiting()
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # releases the lock
