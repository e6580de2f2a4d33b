"""The HDF5 light-field store: writing (per-light-field parts, atomic assembly) and reading.

Schema (format version 1, see ``docs/store.md``):

* ``/views``  uint8 ``[N, 8, 8, H, W, 3]`` — light field, row, col, y, x, RGB; chunked one view per chunk
  ``(1, 1, 1, H, W, 3)``, gzip-compressed.
* ``/names``  UTF-8 strings ``[N]`` — one name per light field.
* ``/disparity`` (optional; synthetic stores made with ``--disparity``) float16 ``[N, 8, 8, H, W]`` — per
  view, the ground-truth disparity ``d`` (px between views (0,0) and (7,7)) of the surface each pixel shows;
  the flow from view ``(r, c)`` to view ``(r0, c0)`` is ``d·(c − c0, r − r0)/7``. Chunked one view per
  chunk, shuffled and gzip-compressed.
* root attributes: ``format``, ``format_version``, ``source``, ``synthetic``, ``angular_grid``, ``height``,
  ``width``, ``crop``, ``split``, ``split_rule``, ``seed``, ``train_count``, ``test_count``, ``skipped``,
  ``prepare_digest``, ``refsr_version`` (plus ``synthetic_params`` for synthetic data).

Readers go through :func:`open_store`, which also accepts the CrossNet authors' HDF5 layout
(``/img_HR`` uint8 ``[N, 8, 8, 3, H, W]``), so data converted with the original code can be reused.

Writing happens in two steps so that prepare can run in parallel and resume: each worker writes one
*part* file per light field (:func:`write_part`, atomic), and the main process assembles the parts into
the final store by copying compressed chunks verbatim (:func:`assemble_store`) under a temporary name
that is renamed when complete. Assembly writes the same bytes whatever the history of the parts, so an
interrupted-and-resumed run produces a file identical to an uninterrupted one (no time stamps:
``track_times=False``; gzip is deterministic).
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from refsr_cli.errors import RefsrError
from refsr_cli.data.files import atomic_write

FORMAT = "refsr-lightfield-store"
FORMAT_VERSION = 1
GZIP_LEVEL = 1   # natural images barely compress (~12 %); level 1 costs least time for the same ratio
_STR = h5py.string_dtype("utf-8")


# --------------------------------------------------------------------------------------------- writing

def _views_dataset(h5: h5py.File, name: str, shape: tuple, chunk: tuple) -> h5py.Dataset:
    return h5.create_dataset(name, shape=shape, dtype=np.uint8, chunks=chunk, compression="gzip",
                             compression_opts=GZIP_LEVEL, track_times=False)


def _disparity_dataset(h5: h5py.File, name: str, shape: tuple, chunk: tuple) -> h5py.Dataset:
    # Disparity is piecewise smooth: byte shuffling lets gzip pack the slowly varying high bytes.
    return h5.create_dataset(name, shape=shape, dtype=np.float16, chunks=chunk, compression="gzip",
                             compression_opts=GZIP_LEVEL, shuffle=True, track_times=False)


def write_part(path: str | os.PathLike, views: np.ndarray, name: str, disparity: np.ndarray | None = None) -> None:
    """Write one light field (``uint8 [8, 8, H, W, 3]``, optionally its per-view ``disparity``
    ``[8, 8, H, W]``) as a part file, atomically.

    The chunk shape and filter equal the final store's, so :func:`assemble_store` can copy the compressed
    chunks without decompressing them (compression thus runs in the parallel workers).
    """
    path = Path(path)
    if views.dtype != np.uint8 or views.ndim != 5 or views.shape[4] != 3:
        raise ValueError(f"expected uint8 [rows, cols, H, W, 3], got {views.dtype} {views.shape}")
    if disparity is not None and disparity.shape != views.shape[:4]:
        raise ValueError(f"disparity {disparity.shape} does not match the views {views.shape[:4]}")

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as h5:
            ds = _views_dataset(h5, "views", views.shape, (1, 1) + views.shape[2:])
            ds[...] = views
            if disparity is not None:
                dd = _disparity_dataset(h5, "disparity", disparity.shape, (1, 1) + disparity.shape[2:])
                dd[...] = disparity.astype(np.float16)
            h5.attrs["name"] = name

    atomic_write(path, write)


def part_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """Shape ``(rows, cols, H, W, 3)`` of a part file."""
    with h5py.File(path, "r") as h5:
        return tuple(h5["views"].shape)


def encode_attr(value):
    """HDF5-friendly attribute values: dicts and lists that are not all numbers as JSON text, lists of
    numbers as arrays, None as an empty string. :func:`decode_attr` reverses it."""
    if value is None:
        return ""
    if isinstance(value, dict) or (isinstance(value, (list, tuple))
                                   and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, (list, tuple)):
        return np.asarray(value) if value else np.zeros(0, np.int64)
    return value


def assemble_store(out: str | os.PathLike, parts: Sequence[tuple[str, Path]], attrs: dict) -> Path:
    """Write the store ``out`` from part files ``[(name, part_path), …]`` (in that order), atomically.

    All parts must have the same view size. The file is written under a temporary name in the same folder
    and renamed over ``out`` once closed, so a reader never sees a half-written store.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not parts:
        raise RefsrError(f"{out}: no light fields to write")
    shape = part_shape(parts[0][1])
    rows, cols, height, width, _ = shape
    with h5py.File(parts[0][1], "r") as first:
        with_disparity = "disparity" in first   # all parts of one prepare run agree (same task params)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as h5:
            views = _views_dataset(h5, "views", (len(parts),) + shape, (1, 1, 1, height, width, 3))
            disparity = _disparity_dataset(h5, "disparity", (len(parts),) + shape[:4], (1, 1, 1, height, width)) \
                if with_disparity else None
            names = h5.create_dataset("names", shape=(len(parts),), dtype=_STR, track_times=False)
            names[...] = [name for name, _ in parts]
            for i, (name, part) in enumerate(parts):
                with h5py.File(part, "r") as src:
                    ds = src["views"]
                    if ds.shape != shape:
                        raise RefsrError(f"{name}: light field is {ds.shape[2]}×{ds.shape[3]}, the others "
                                         f"are {height}×{width}")
                    if with_disparity and "disparity" not in src:
                        raise RefsrError(f"{name}: part file has no disparity, the others have")
                    for r in range(rows):
                        for c in range(cols):
                            mask, chunk = ds.id.read_direct_chunk((r, c, 0, 0, 0))
                            views.id.write_direct_chunk((i, r, c, 0, 0, 0), chunk, mask)
                            if with_disparity:
                                mask, chunk = src["disparity"].id.read_direct_chunk((r, c, 0, 0))
                                disparity.id.write_direct_chunk((i, r, c, 0, 0), chunk, mask)
            base = {"format": FORMAT, "format_version": FORMAT_VERSION, "angular_grid": [rows, cols],
                    "height": height, "width": width}
            for key, value in {**base, **attrs}.items():
                h5.attrs[key] = encode_attr(value)

    atomic_write(out, write)
    return out


# --------------------------------------------------------------------------------------------- reading

class UnreadableData(RefsrError):
    """Pixels of a store that cannot be read back (a corrupt chunk); the message names the store, the
    light field (or clip) and the view (or frame), so that a reader may leave that sample out."""


def decode_attr(value):
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class LazyH5:
    """A read-only HDF5 handle opened on first use *in the current process*.

    An h5py handle must not cross a fork or be pickled, so store objects handed to DataLoader workers
    (forked or spawned) open their own. Subclasses set ``self.path`` and call :meth:`_file`.
    """

    path: Path
    _h5: h5py.File | None = None
    _pid: int | None = None

    def _open_for_metadata(self) -> h5py.File:
        """A short-lived handle for reading metadata; a one-line error if the file is missing or not HDF5."""
        if not self.path.is_file():
            raise RefsrError(f"{self.path}: no such store")
        try:
            return h5py.File(self.path, "r")
        except OSError as exc:
            raise RefsrError(f"{self.path}: not a readable HDF5 file ({exc})".splitlines()[0]) from None

    @contextmanager
    def _reading(self, what: str):
        """Turn h5py's failure to decode a chunk (an ``OSError``) into :class:`UnreadableData` about ``what``."""
        try:
            yield
        except OSError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UnreadableData(f"{self.path}: {what}: unreadable data, the file is damaged ({reason})") from None

    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_h5"], state["_pid"] = None, None
        return state

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5, self._pid = None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


class LightFieldStore(LazyH5):
    """Read access to a light-field store, ours or the authors' layout.

    Metadata (``names``, ``attrs``, sizes) is read when the object is created, with a short-lived file
    handle; pixel data goes through a handle opened on first access *in the current process*, so one
    object can be handed to DataLoader workers (forked or spawned) and each opens its own handle.

    Attributes: ``path``, ``layout`` (``"refsr"`` or ``"authors"``), ``names`` (list of str),
    ``attrs`` (dict), ``grid`` (``(rows, cols)``), ``height``, ``width``.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with self._open_for_metadata() as h5:
            if "views" in h5:
                self.layout, self._key = "refsr", "views"
                ds = h5["views"]
                if ds.ndim != 6 or ds.shape[5] != 3 or ds.dtype != np.uint8:
                    raise RefsrError(f"{self.path}: /views is {ds.dtype} {ds.shape}, expected uint8 "
                                     f"[N, rows, cols, H, W, 3]")
                n, rows, cols, height, width = ds.shape[:5]
                names = [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in h5["names"][...]] \
                    if "names" in h5 else [f"{i:05d}" for i in range(n)]
            elif "img_HR" in h5:
                self.layout, self._key = "authors", "img_HR"
                ds = h5["img_HR"]
                if ds.ndim != 6 or ds.shape[3] != 3:
                    raise RefsrError(f"{self.path}: /img_HR is {ds.shape}, expected [N, 8, 8, 3, H, W]")
                if ds.dtype != np.uint8:
                    raise RefsrError(f"{self.path}: /img_HR is {ds.dtype}, expected uint8")
                n, rows, cols, _, height, width = ds.shape
                # The authors' files carry no names; number them after the file.
                names = [f"{self.path.stem}/{i:05d}" for i in range(n)]
            else:
                raise RefsrError(f"{self.path}: neither /views (refsr store) nor /img_HR (authors' layout) found")
            if len(names) != n:
                raise RefsrError(f"{self.path}: /names has {len(names)} entries for {n} light fields")
            self.attrs = {k: decode_attr(v) for k, v in h5.attrs.items()}
            if self.layout == "refsr" and self.attrs.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
                raise RefsrError(f"{self.path}: store format version {self.attrs['format_version']} is newer "
                                 f"than this refsr understands ({FORMAT_VERSION})")
            self.has_disparity = self.layout == "refsr" and "disparity" in h5
        self.names: list[str] = names
        self.grid = (int(rows), int(cols))
        self.height, self.width = int(height), int(width)

    def _dataset(self) -> h5py.Dataset:
        return self._file()[self._key]

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return (f"LightFieldStore({str(self.path)!r}, layout={self.layout}, n={len(self)}, "
                f"grid={self.grid}, size={self.height}×{self.width})")

    def _check(self, index: int, row: int, col: int) -> None:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.path}: light field {index} out of range (0…{len(self) - 1})")
        if not (0 <= row < self.grid[0] and 0 <= col < self.grid[1]):
            raise IndexError(f"{self.path}: view ({row}, {col}) outside the {self.grid[0]}×{self.grid[1]} grid")

    def view(self, index: int, row: int, col: int) -> np.ndarray:
        """View ``(row, col)`` of light field ``index`` as ``uint8 H×W×3`` (RGB)."""
        self._check(index, row, col)
        with self._reading(f"light field {self.names[index]!r}, view ({row}, {col})"):
            data = self._dataset()[index, row, col]
        if self.layout == "authors":
            data = np.ascontiguousarray(data.transpose(1, 2, 0))
        return data

    def disparity(self, index: int, row: int, col: int) -> np.ndarray:
        """Ground-truth disparity of view ``(row, col)`` as ``float32 H×W`` (stores with ``/disparity``)."""
        self._check(index, row, col)
        if not self.has_disparity:
            raise RefsrError(f"{self.path}: no /disparity (make synthetic stores with --disparity)")
        with self._reading(f"light field {self.names[index]!r}, disparity of view ({row}, {col})"):
            return self._file()["disparity"][index, row, col].astype(np.float32)

    def views(self, index: int) -> np.ndarray:
        """All views of light field ``index`` as ``uint8 [rows, cols, H, W, 3]``."""
        self._check(index, 0, 0)
        with self._reading(f"light field {self.names[index]!r}"):
            data = self._dataset()[index]
        if self.layout == "authors":
            data = np.ascontiguousarray(data.transpose(0, 1, 3, 4, 2))
        return data


def open_store(path: str | os.PathLike | LightFieldStore) -> LightFieldStore:
    """Open a store (ours, the authors' ``/img_HR`` layout, or a video store); a store object is returned as is."""
    if isinstance(path, LightFieldStore):
        return path
    from refsr_cli.data.video_store import VideoStore, is_video_store  # video stores share the reader interface

    if is_video_store(path):
        return VideoStore(path)
    return LightFieldStore(path)


def root_attribute(path: str | os.PathLike, key: str):
    """Root attribute ``key`` of an HDF5 file (bytes decoded), or None when unreadable/absent."""
    try:
        with h5py.File(path, "r") as h5:
            value = h5.attrs.get(key)
    except (OSError, ValueError):
        return None
    return value.decode() if isinstance(value, bytes) else value


def read_digest(path: str | os.PathLike) -> str | None:
    """The ``prepare_digest`` attribute of a store, or None when unreadable/absent."""
    return root_attribute(path, "prepare_digest")

