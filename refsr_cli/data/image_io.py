"""Reading and writing images: the one place that knows about bit depths and channels.

In memory an image is ``torch.float32``, ``3×H×W`` (or ``N×3×H×W``), RGB, values in [0, 1].
On disk: 8- or 16-bit PNG, JPEG or TIFF via imageio. Grayscale is replicated to RGB and alpha is
dropped, each with a notice, never silently.
"""
from __future__ import annotations

# torch is imported inside the functions that make tensors: prepare's decoding workers use only the
# array functions and should not pay torch's import time (about 1.5 CPU-seconds each).

import os
from pathlib import Path

from typing import TYPE_CHECKING

import imageio.v3 as iio
import numpy as np

from refsr_cli import console
from refsr_cli.data.files import atomic_write
from refsr_cli.errors import RefsrError

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pgm", ".ppm", ".pnm")


def to_rgb_array(array: np.ndarray, name: str = "image") -> np.ndarray:
    """``H×W``, ``H×W×1``, ``H×W×3`` or ``H×W×4`` → ``H×W×3`` (same dtype), with a notice on conversion."""
    if array.ndim == 2:
        console.notice(f"{name}: grayscale converted to RGB")
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3:
        raise RefsrError(f"{name}: unsupported image shape {array.shape}")
    channels = array.shape[2]
    if channels == 3:
        return array
    if channels == 1:
        console.notice(f"{name}: grayscale converted to RGB")
        return np.repeat(array, 3, axis=2)
    if channels == 4:
        console.notice(f"{name}: alpha channel dropped")
        return array[:, :, :3]
    if channels == 2:
        console.notice(f"{name}: grayscale+alpha converted to RGB")
        return np.repeat(array[:, :, :1], 3, axis=2)
    raise RefsrError(f"{name}: unsupported number of channels ({channels})")


def _png_header(path: Path) -> tuple[int, int] | None:
    """``(bit depth, colour type)`` from a PNG's IHDR chunk, ``None`` for anything that is not a PNG."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(26)
    except OSError:
        return None
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


# How each format we name files for begins; imageio's own errors for anything else (a backend it cannot
# find, "need at least one array to stack") say nothing about the file.
_SIGNATURES = {"PNG": (b"\x89PNG\r\n\x1a\n",), "JPEG": (b"\xff\xd8\xff",), "TIFF": (b"II*\x00", b"MM\x00*"),
               "PNM": (b"P2", b"P3", b"P5", b"P6")}
_FORMAT_OF_SUFFIX = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
                     ".pgm": "PNM", ".ppm": "PNM", ".pnm": "PNM"}


def _check_signature(path: Path) -> None:
    """Refuse an empty file, and a ``.png``/``.jpg``/``.tif`` whose bytes are no image of those formats,
    in words; other suffixes are left to imageio. A PNG named ``.jpg`` (any of the three) is read."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise RefsrError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not head:
        raise RefsrError(f"{path}: cannot read image: the file is empty (0 bytes)")
    expected = _FORMAT_OF_SUFFIX.get(path.suffix.lower())
    if expected and not any(head.startswith(sig) for sigs in _SIGNATURES.values() for sig in sigs):
        raise RefsrError(f"{path}: cannot read image: not a {expected} file (it begins with {head!r})")


def _read_png48(path: Path, colour_type: int) -> np.ndarray:
    """16-bit colour PNG → ``uint16 H×W×3``, decoded by PyAV (FFmpeg's PNG decoder).

    Pillow, imageio's PNG reader, reduces 16-bit RGB(A) PNGs to 8 bits without a word.
    """
    import av

    try:
        with av.open(str(path)) as container:
            array = next(container.decode(video=0)).to_ndarray(format="rgb48le")
    except Exception as exc:  # av raises its own error types for truncated/garbage files
        raise RefsrError(f"{path}: cannot read image ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if colour_type == 6:
        console.notice(f"{path}: alpha channel dropped")
    return array


def encode_png(array: np.ndarray) -> bytes:
    """Encode ``H×W×3`` or ``H×W×1`` uint8/uint16 as PNG bytes (8- or 16-bit; the "Up" filter, zlib 6).

    Used for 16-bit output, which Pillow cannot write.
    """
    import struct
    import zlib

    if array.ndim == 2:
        array = array[:, :, None]
    height, width, channels = array.shape
    depth = 16 if array.dtype == np.uint16 else 8
    rows = np.ascontiguousarray(array, dtype=">u2" if depth == 16 else np.uint8).view(np.uint8).reshape(height, -1)
    data = np.empty((height, rows.shape[1] + 1), np.uint8)
    data[:, 0] = 2                      # "Up": byte minus the byte above (mod 256)
    data[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=data[1:, 1:])

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, depth, 2 if channels == 3 else 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data.tobytes(), 6))
            + chunk(b"IEND", b""))


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an ``H×W×3`` uint8 or uint16 array (16-bit PNGs keep their 16 bits)."""
    path = Path(path)
    if not path.is_file():
        raise RefsrError(f"{path}: no such file")
    _check_signature(path)
    header = _png_header(path)
    if header is not None and header[0] == 16 and header[1] in (2, 6):
        return _read_png48(path, header[1])
    try:
        array = np.asarray(iio.imread(path))
    except Exception as exc:  # imageio raises many types for truncated/garbage files
        raise RefsrError(f"{path}: cannot read image ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # some TIFFs are planar
    array = to_rgb_array(array, str(path))
    if array.dtype == np.uint8 or array.dtype == np.uint16:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        return (np.clip(array, 0, 1) * 65535 + 0.5).astype(np.uint16)
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array, 0, 65535).astype(np.uint16)
    raise RefsrError(f"{path}: unsupported pixel type {array.dtype}")


def to_uint8(array: np.ndarray) -> np.ndarray:
    """uint8 stays; uint16 is rounded to 8 bits (x·255/65535, round half up)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    raise RefsrError(f"unsupported pixel type {array.dtype}")


def array_to_tensor(array: np.ndarray) -> "torch.Tensor":
    """``H×W×3`` uint8/uint16 → ``3×H×W`` float32 in [0, 1]."""
    import torch

    scale = 65535.0 if array.dtype == np.uint16 else 255.0
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(scale)


def tensor_to_array(image: "torch.Tensor", bits: int = 8) -> np.ndarray:
    """``3×H×W`` (or ``1×3×H×W``) float in [0, 1] → ``H×W×3`` uint8 (bits=8) or uint16 (bits=16), rounded."""
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError("tensor_to_array takes one image")
        image = image[0]
    peak = 65535.0 if bits == 16 else 255.0
    dtype = np.uint16 if bits == 16 else np.uint8
    data = image.detach().float().clamp(0, 1).mul(peak).round().cpu().numpy()
    return data.transpose(1, 2, 0).astype(dtype)


def read_image(path: str | os.PathLike) -> "tuple[torch.Tensor, int]":
    """Read an image as ``(3×H×W float32 tensor in [0, 1], bits)`` where bits is 8 or 16."""
    array = read_array(path)
    return array_to_tensor(array), 16 if array.dtype == np.uint16 else 8


def write_image(path: str | os.PathLike, image: "torch.Tensor | np.ndarray", bits: int = 8) -> None:
    """Write ``3×H×W`` float tensor (or an ``H×W×3`` integer array) atomically as an image file."""
    array = image if isinstance(image, np.ndarray) else tensor_to_array(image, bits)
    path = Path(path)
    extension = path.suffix.lower()
    if extension == ".png" and array.dtype == np.uint16:
        atomic_write(path, lambda tmp: tmp.write_bytes(encode_png(array)))
    else:
        atomic_write(path, lambda tmp: iio.imwrite(tmp, array, extension=extension))


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files of a folder (sorted; hidden and temporary files skipped)."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern)
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
