"""Decoding light fields: Lytro lenslet PNGs and sub-aperture folders → ``uint8 [8, 8, H, W, 3]``.

Accepted layouts (documented for users in ``docs/store.md``):

* **Lenslet PNG** — one interleaved image per light field with 14×14 angular samples (Flower's
  ``*_eslf.png``): after cropping the image to a multiple of 14, view ``(v, u)`` is
  ``img[v::14, u::14]``. The central 8×8 views are angular indices 3…10.
* **Sub-aperture folder** — one folder per light field holding one image per view, named by its
  angular index: the *last two integers* of the file stem are ``(row, col)``, e.g. ``03_07.png``,
  ``view_3_7.png``, ``lf-r03-c07.tif``, ``img_03x07.png``. The indices must form a complete square grid of
  N×N views (N ≥ 8; 0- or 1-based, any start); the central 8×8 block is kept (N = 14 → indices 3…10,
  the same views as the lenslet layout).

Both 8- and 16-bit images are accepted (16-bit is rounded to 8-bit, since the store holds uint8 like the
authors' data); grayscale and RGBA go through :mod:`refsr_cli.data.image_io`'s conversions with a notice.
16-bit *colour* PNGs are read with PyAV, because Pillow (behind imageio) returns them as 8-bit.
Every problem raises :class:`RefsrError` naming the file and what is wrong.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refsr_cli.errors import RefsrError
from refsr_cli.data.image_io import IMAGE_SUFFIXES, read_array, to_uint8

LENSLET_GRID = 14     # Lytro Illum angular samples per axis
GRID = 8              # views kept per axis (the papers' central 8×8)
MIN_SUBAPERTURE_VIEWS = GRID * GRID

# The last two integers of a file stem, separated by anything that is not a digit.
_INDEX_RE = re.compile(r"(\d+)\D+(\d+)\D*$")


@dataclass(frozen=True)
class LightFieldSource:
    """One discovered light field: ``name`` (relative path, no suffix, '/'-separated), its layout, path."""

    name: str
    layout: str          # "lenslet" or "subaperture"
    path: Path           # the PNG, or the folder

    def describe(self) -> str:
        return str(self.path)


def decode_lenslet(path: str | os.PathLike, crop: tuple[int, int] | None = None,
                   grid: int = LENSLET_GRID) -> np.ndarray:
    """Decode a lenslet-interleaved PNG into its central 8×8 views, ``uint8 [8, 8, H, W, 3]``.

    ``crop=(H, W)`` keeps the top-left H×W of every view (``None``: the whole view).
    """
    path = Path(path)
    image = read_array(path)     # H×W×3 uint8/uint16, RGB; RefsrError if unreadable
    rows, cols = image.shape[0] // grid, image.shape[1] // grid
    if rows < 1 or cols < 1:
        raise RefsrError(f"{path}: image is {image.shape[0]}×{image.shape[1]}, too small for "
                         f"{grid}×{grid} lenslets")
    # Only the pixels that end up in the kept views are touched (a Lytro PNG is ~40 Mpx).
    if crop is not None:
        if rows < crop[0] or cols < crop[1]:
            raise RefsrError(f"{path}: views are {rows}×{cols}, smaller than the crop {crop[0]}×{crop[1]} "
                             f"(use --crop H W or --no-crop)")
        rows, cols = crop
    block = image[: rows * grid, : cols * grid]
    # (y, v, x, u, c) → pick v, u in the central block → (v, u, y, x, c)
    first = (grid - GRID) // 2
    block = block.reshape(rows, grid, cols, grid, 3)[:, first:first + GRID, :, first:first + GRID]
    views = np.ascontiguousarray(block.transpose(1, 3, 0, 2, 4))
    return to_uint8(views)


def subaperture_index(path: Path) -> tuple[int, int] | None:
    """``(row, col)`` parsed from the last two integers of the file stem, or None."""
    match = _INDEX_RE.search(path.stem)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def _indexed_images(folder: Path) -> dict[tuple[int, int], Path]:
    found: dict[tuple[int, int], Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith(".") or p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        index = subaperture_index(p)
        if index is None:
            continue
        if index in found:
            raise RefsrError(f"{folder}: two images for view {index}: {found[index].name} and {p.name}")
        found[index] = p
    return found


def decode_subaperture_folder(folder: str | os.PathLike,
                              crop: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a folder of sub-aperture images into its central 8×8 views, ``uint8 [8, 8, H, W, 3]``."""
    folder = Path(folder)
    found = _indexed_images(folder)
    rows = sorted({r for r, _ in found})
    cols = sorted({c for _, c in found})
    if len(rows) != len(cols) or len(rows) < GRID:
        raise RefsrError(f"{folder}: sub-aperture indices form a {len(rows)}×{len(cols)} grid, "
                         f"expected a square grid of at least {GRID}×{GRID}")
    missing = [(r, c) for r in rows for c in cols if (r, c) not in found]
    if missing:
        r, c = missing[0]
        raise RefsrError(f"{folder}: view ({r}, {c}) is missing ({len(missing)} of "
                         f"{len(rows) * len(cols)} views missing)")
    first = (len(rows) - GRID) // 2
    keep_rows, keep_cols = rows[first:first + GRID], cols[first:first + GRID]
    out = None
    for i, r in enumerate(keep_rows):
        for j, c in enumerate(keep_cols):
            path = found[(r, c)]
            view = read_array(path)
            if crop is not None:
                if view.shape[0] < crop[0] or view.shape[1] < crop[1]:
                    raise RefsrError(f"{path}: view is {view.shape[0]}×{view.shape[1]}, smaller than the "
                                     f"crop {crop[0]}×{crop[1]} (use --crop H W or --no-crop)")
                view = view[: crop[0], : crop[1]]
            view = to_uint8(view)
            if out is None:
                out = np.empty((GRID, GRID) + view.shape, np.uint8)
            elif view.shape != out.shape[2:]:
                raise RefsrError(f"{path}: view is {view.shape[0]}×{view.shape[1]}, the other views of "
                                 f"this light field are {out.shape[2]}×{out.shape[3]}")
            out[i, j] = view
    assert out is not None
    return out


def decode(source: LightFieldSource, crop: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a discovered light field (either layout) into ``uint8 [8, 8, H, W, 3]``."""
    if source.layout == "lenslet":
        return decode_lenslet(source.path, crop)
    if source.layout == "subaperture":
        return decode_subaperture_folder(source.path, crop)
    raise ValueError(f"unknown layout {source.layout!r}")


def discover(src: str | os.PathLike) -> list[LightFieldSource]:
    """Every light field under ``src`` (recursively), sorted by name.

    A folder is a sub-aperture light field when at least 64 of its images carry a ``(row, col)`` index
    in their names; its other images are ignored. Every other ``.png`` is taken as a lenslet image.
    ``src`` may also be a single lenslet PNG or a single sub-aperture folder. Hidden files and folders
    (names starting with '.') are skipped.
    """
    src = Path(src)
    if not src.exists():
        raise RefsrError(f"{src}: no such file or folder")
    if src.is_file():
        if src.suffix.lower() != ".png":
            raise RefsrError(f"{src}: not a PNG lenslet image")
        return [LightFieldSource(src.stem, "lenslet", src)]
    found: list[LightFieldSource] = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        images = [folder / f for f in sorted(filenames)
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
        indexed = [p for p in images if subaperture_index(p) is not None]
        rel = folder.relative_to(src).as_posix()
        if len(indexed) >= MIN_SUBAPERTURE_VIEWS:
            name = rel if rel != "." else src.name
            found.append(LightFieldSource(name, "subaperture", folder))
            continue
        for p in images:
            if p.suffix.lower() == ".png":
                found.append(LightFieldSource(p.relative_to(src).with_suffix("").as_posix(), "lenslet", p))
    found.sort(key=lambda s: s.name)
    return found
