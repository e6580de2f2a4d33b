"""Test sources of the benchmark: named views, each a list of ``(name, lr, ref, hr)`` pairs per scale.

A light-field or video store (:class:`StoreSource`), the built-in real-pair suite
(:class:`RealSuiteSource`), a folder or CSV of pairs (:class:`PairsSource`). Each source says how the
parallax of a pair is known (ground truth, or estimated by :func:`refsr_cli.ops.geometry.estimate_geometry`,
the estimator inference uses to read a pair's geometry) and what plane-sweep geometry its view pairs have.

Parallax is the mean displacement magnitude (HR pixels) between the LR view and the reference:

* built-in synthetic light fields: from the renderer's ground-truth disparity ``d`` of view (0,0):
  view (k,k) is displaced by ``d·k/7`` per axis, i.e. ``√2·d·k/7``;
* the real suite's ``stereo_motorcycle``: the mean of its ground-truth disparity map over the crop;
* anything else: *estimated* by block matching GT against Ref (the mean displacement at its trustworthy
  pixels); ``None`` when there are too few (a textureless pair, another scene).
"""
from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path
from typing import Iterable

import torch

from refsr_cli import console
from refsr_cli.data.lightfield_dataset import iter_test_pairs
from refsr_cli.data.video_store import is_video_store, iter_video_test_pairs
from refsr_cli.errors import RefsrError
from refsr_cli.ops.geometry import estimate_geometry

DEFAULT_VIEWS = (1, 7)
ESTIMATED = "estimated (block matching, refsr_cli.ops.geometry)"


def estimated_parallax(hr: torch.Tensor, ref: torch.Tensor) -> tuple[float | None, str]:
    geometry = estimate_geometry(hr, ref)
    return (geometry.parallax if geometry is not None else None), ESTIMATED


def safe_name(text: str) -> str:
    """A file-name-safe form of ``text`` (a short hash keeps different names apart)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "x"
    if clean != str(text):
        clean = f"{clean[:60]}-{hashlib.sha1(str(text).encode()).hexdigest()[:6]}"
    return clean[:80]


class Source:
    """A test set: named views, each a list of ``(name, lr, ref, hr)`` pairs per scale."""

    label: str = ""        # shown in the report's ``data`` column
    ident: str = ""        # cache key part
    kind: str = ""         # "lightfield" | "video" | "real" | "pairs"
    path: str | None = None

    def views(self) -> list:
        raise NotImplementedError

    def view_label(self, view) -> str:
        return str(view)

    def pairs(self, scale: int, view, skipped: list[str] | None = None
              ) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The test pairs ``(name, lr, ref, hr)`` of ``view`` at ``scale``. With a ``skipped`` list, pairs
        that cannot be read (a damaged store) are left out and named in it instead of failing the run."""
        raise NotImplementedError

    def parallax(self, name: str, view, hr: torch.Tensor, ref: torch.Tensor) -> tuple[float | None, str]:
        """``(mean parallax in HR px, how it was obtained)``."""
        return estimated_parallax(hr, ref)

    def plane_sweep(self, view) -> dict:
        """Geometry of the view pair for plane-sweep networks (Cross-MPI): ``baseline`` ``(bx, by)`` and
        optionally ``disparity_range`` ``(lo, hi)`` in HR px along it; empty when unknown."""
        return {}

    def describe(self) -> dict:
        return {"label": self.label, "kind": self.kind, "path": self.path, "views": [self.view_label(v)
                                                                                  for v in self.views()]}


class StoreSource(Source):
    """A light-field store (views (k,k) against Ref (0,0)) or a video store (frame gap k)."""

    def __init__(self, path: str | os.PathLike, views: Iterable[int], label: str | None = None,
                 disparity: dict[str, float] | None = None):
        from refsr_cli.data.store import open_store

        self.path = str(path)
        store = open_store(path)
        self.kind = "video" if is_video_store(path) else "lightfield"
        self.grid = store.grid
        self.names = list(store.names)
        if views is None:     # default: the light-field views 1 and 7, or every gap a video store holds
            gaps = store.attrs.get("gaps") if self.kind == "video" else None
            views = [int(g) for g in gaps] if isinstance(gaps, (list, tuple)) and gaps else DEFAULT_VIEWS
        self._views = [int(v) for v in views]
        limit = min(self.grid) - 1
        if self.kind == "lightfield":
            bad = [v for v in self._views if not 1 <= v <= limit]
            if bad:
                raise RefsrError(f"{path}: view(s) {', '.join(map(str, bad))} outside 1…{limit} of its "
                                 f"{self.grid[0]}×{self.grid[1]} angular grid")
        digest = store.attrs.get("prepare_digest")
        stat = Path(path).stat()
        basis = f"{digest}" if digest else f"{stat.st_size}:{stat.st_mtime_ns}"
        # "data/test.h5" → "data/test": prepare writes test.h5 into a named folder, so the folder says more.
        stem = Path(path).stem
        parent = Path(path).resolve().parent.name
        self.label = label or (f"{parent}/{stem}" if stem in ("test", "train", "val") and parent else stem)
        self.ident = f"{safe_name(self.label)}-{hashlib.sha1(basis.encode()).hexdigest()[:8]}"
        self.disparity = disparity or {}
        if hasattr(store, "close"):
            store.close()

    def views(self) -> list:
        return list(self._views)

    def view_label(self, view) -> str:
        return f"gap {view}" if self.kind == "video" else f"({view},{view})"

    def pairs(self, scale: int, view, skipped=None):
        read = iter_video_test_pairs if self.kind == "video" else iter_test_pairs
        try:
            return list(read(self.path, scale, int(view), skipped=skipped))
        except (ValueError, IndexError) as exc:
            raise RefsrError(f"{self.path}: {exc}") from None

    def plane_sweep(self, view) -> dict:
        if self.kind != "lightfield":
            return {}
        k = int(view) / (self.grid[0] - 1)   # LR view (k,k), Ref (0,0): planes in (0,0)→(7,7) disparities
        return {"baseline": (k, k)}

    def parallax(self, name, view, hr, ref):
        if self.kind == "lightfield" and name in self.disparity:
            per_axis = self.disparity[name] * int(view) / (self.grid[0] - 1)
            return math.sqrt(2.0) * per_axis, "ground-truth disparity"
        return estimated_parallax(hr, ref)


class RealSuiteSource(Source):
    """The real-pair suite (:mod:`refsr_cli.bench.real_suite`): one view per real case."""

    kind = "real"
    label = "real"
    path = "built-in real pairs (docs/real-suite.md)"

    def __init__(self):
        from refsr_cli.bench.real_suite import real_cases

        self.cases, missing = real_cases()
        for line in missing:
            console.warn(f"real-pair suite: {line}")
        self.by_name = {case.name: case for case in self.cases}
        self.ident = "real-v1"

    def views(self) -> list:
        return [case.name for case in self.cases]

    def pairs(self, scale, view, skipped=None):
        from refsr_cli.bench.real_suite import case_pair

        return [case_pair(self.by_name[view], scale)]

    def parallax(self, name, view, hr, ref):
        if self.by_name[view].kind == "stereo":
            from refsr_cli.bench.real_suite import stereo_parallax

            return stereo_parallax(), "ground-truth disparity"
        return super().parallax(name, view, hr, ref)

    def describe(self) -> dict:
        return {**super().describe(), "cases": [{"name": c.name, "kind": c.kind, "source": c.source}
                                                for c in self.cases]}


class WideTeleSource(RealSuiteSource):
    """The built-in wide/tele cases (:func:`refsr_cli.bench.real_suite.wide_tele_cases`): each reference is
    smaller than the HR view and covers only its centre. The bench aligns it as ``refsr infer --prealign``
    does (once per pair, outside the methods' times) and scores the footprint's inside and outside apart."""

    kind = "wide/tele"
    label = "wide/tele"
    path = "built-in wide/tele pairs (docs/real-suite.md)"

    def __init__(self):
        from refsr_cli.bench.real_suite import wide_tele_cases
        from refsr_cli.inference import footprint
        from refsr_cli.ops import prealign

        self.cases = wide_tele_cases()
        self.by_name = {case.name: case for case in self.cases}
        # What the methods get depends on the alignment and the footprint: their code is part of the key.
        code = b"".join(Path(m.__file__).read_bytes() for m in (prealign, footprint))
        self.ident = f"widetele-{hashlib.sha1(code).hexdigest()[:8]}"


class PairsSource(Source):
    """A folder (or CSV) of LR/Ref/HR pairs, as ``refsr infer`` reads them; pairs without HR are skipped."""

    kind = "pairs"

    def __init__(self, path: str | os.PathLike):
        from refsr_cli.data.pairs import discover_pairs

        self.path = str(path)
        found = discover_pairs(path)
        self.items = [p for p in found if p.problem is None and p.hr is not None]
        skipped = len(found) - len(self.items)
        if skipped:
            console.warn(f"{path}: {skipped} pair(s) without a ground truth (HR) or with problems skipped")
        if not self.items:
            raise RefsrError(f"{path}: no pair has a ground-truth image (NAME_hr.* or hr/NAME.*) to score against")
        self.label = Path(path).name or str(path)
        h = hashlib.sha1()
        for p in self.items:
            for f in (p.lr, p.ref, p.hr):
                st = Path(f).stat()
                h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
        self.ident = f"{safe_name(self.label)}-{h.hexdigest()[:8]}"
        self._warned: set[int] = set()

    def views(self) -> list:
        return ["pairs"]

    def pairs(self, scale, view, skipped=None):
        from refsr_cli.data.image_io import read_image

        out, wrong = [], []
        for p in self.items:
            lr, _ = read_image(p.lr)
            ref, _ = read_image(p.ref)
            hr, _ = read_image(p.hr)
            if tuple(hr.shape[-2:]) != (lr.shape[-2] * scale, lr.shape[-1] * scale):
                wrong.append(p.name)
                continue
            if ref.shape != hr.shape:
                raise RefsrError(f"{p.ref}: reference is {ref.shape[-1]}×{ref.shape[-2]}, the ground truth "
                                 f"{hr.shape[-1]}×{hr.shape[-2]}")
            out.append((p.name, lr, ref, hr))
        if wrong and scale not in self._warned:
            self._warned.add(scale)
            console.warn(f"{self.path}: {len(wrong)} pair(s) are not ×{scale} (HR ≠ {scale}·LR) — "
                         f"skipped at ×{scale}")
        return out


SUITES = ("all", "synthetic", "real", "wide-tele")


def builtin_sources(count: int, size: tuple[int, int], views: Iterable[int], jobs: int,
                    suite: str = "all") -> list[Source]:
    """The built-in test sets: ``synthetic`` light fields, the ``real`` pairs, the ``wide-tele`` pairs, or
    ``all`` of them."""
    from refsr_cli.bench.builtin_data import builtin_disparity, builtin_store

    if suite not in SUITES:
        raise RefsrError(f"unknown suite {suite!r} (known: {', '.join(SUITES)})")
    sources: list[Source] = []
    if suite in ("all", "synthetic"):
        store = builtin_store(count, size, jobs=jobs)
        sources.append(StoreSource(store, views, label="synthetic", disparity=builtin_disparity(store)))
    if suite in ("all", "real"):
        sources.append(RealSuiteSource())
    if suite in ("all", "wide-tele"):
        sources.append(WideTeleSource())
    return sources
