"""Discovering LR/Ref(/HR) pairs for ``refsr infer``.

Three layouts are accepted:

* **flat folder**: ``NAME_lr.EXT`` + ``NAME_ref.EXT`` (+ optional ``NAME_hr.EXT``) side by side;
* **sub-folders**: ``lr/NAME.EXT`` + ``ref/NAME.EXT`` (+ optional ``hr/NAME.EXT``) under the folder;
* **CSV file** given instead of a folder: rows ``lr,ref[,hr]`` (paths relative to the CSV's folder;
  an optional header row ``lr,ref,hr`` is recognised; blank lines and ``#`` comments are skipped).

``EXT`` is any of PNG, JPEG or TIFF (case-insensitive). Discovery never raises for one bad pair: a pair
whose partner is missing, or whose name is ambiguous, is returned with ``problem`` set so that the
inference loop reports it as one failed pair (and, with ``--keep-going``, carries on with the rest).
Only a source that cannot be used at all (no such folder, unreadable CSV, nothing found) raises.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from refsr_cli.errors import RefsrError
from refsr_cli.data.image_io import IMAGE_SUFFIXES, list_images

ROLES = ("lr", "ref", "hr")


@dataclass
class Pair:
    """One unit of work: ``name`` names the outputs (``NAME_sr.png``)."""

    name: str
    lr: Path | None
    ref: Path | None
    hr: Path | None = None
    problem: str | None = None   # set when the pair cannot be processed (missing partner, duplicate …)

    def describe(self) -> str:
        return self.name


def _flat(folder: Path) -> dict[str, dict[str, list[Path]]]:
    """``NAME_lr.EXT`` / ``NAME_ref.EXT`` / ``NAME_hr.EXT`` files of ``folder`` grouped by NAME."""
    found: dict[str, dict[str, list[Path]]] = {}
    for path in list_images(folder):
        stem = path.stem
        for role in ROLES:
            suffix = f"_{role}"
            if stem.lower().endswith(suffix) and len(stem) > len(suffix):
                found.setdefault(stem[: -len(suffix)], {}).setdefault(role, []).append(path)
                break
    return found


def _subfolders(folder: Path) -> dict[str, dict[str, list[Path]]]:
    """``lr/NAME.EXT`` / ``ref/NAME.EXT`` / ``hr/NAME.EXT`` grouped by NAME (folder names case-insensitive)."""
    found: dict[str, dict[str, list[Path]]] = {}
    for child in sorted(folder.iterdir()):
        role = child.name.lower()
        if child.is_dir() and role in ROLES:
            for path in list_images(child):
                found.setdefault(path.stem, {}).setdefault(role, []).append(path)
    return found


def _to_pairs(groups: dict[str, dict[str, list[Path]]], where: str) -> list[Pair]:
    pairs = []
    for name, roles in groups.items():
        problem = None
        picked: dict[str, Path | None] = {}
        for role in ROLES:
            paths = roles.get(role, [])
            if len(paths) > 1:
                problem = f"several {role.upper()} images ({', '.join(p.name for p in paths)})"
            picked[role] = paths[0] if paths else None
        if problem is None and picked["lr"] is None:
            problem = f"no LR image ({where.format(name=name, role='lr')}) for this pair"
        elif problem is None and picked["ref"] is None:
            problem = f"no reference image ({where.format(name=name, role='ref')}) for this pair"
        pairs.append(Pair(name, picked["lr"], picked["ref"], picked["hr"], problem))
    return pairs


def _read_csv(path: Path) -> list[Pair]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RefsrError(f"{path}: cannot read CSV ({type(exc).__name__})") from None
    base = path.parent
    pairs: list[Pair] = []
    rows = [row for row in csv.reader(text.splitlines())]
    for line_no, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if line_no == 1 and cells[0].lower() == "lr":
            continue  # header row
        label = f"{path.name}:{line_no}"
        if len(cells) not in (2, 3) or not cells[0] or not cells[1]:
            pairs.append(Pair(label, None, None, None,
                              f"expected 'lr,ref[,hr]' but got {len(cells)} column(s)"))
            continue
        lr, ref = base / cells[0], base / cells[1]
        hr = base / cells[2] if len(cells) == 3 and cells[2] else None
        # Paths are checked here (not at read time) so a typo reads as a missing partner.
        problem = None
        for role, p in (("LR", lr), ("reference", ref), ("HR", hr)):
            if p is not None and not p.is_file():
                problem = f"{role} image {p} does not exist"
                break
        pairs.append(Pair(lr.stem[:-3] if lr.stem.lower().endswith("_lr") else lr.stem, lr, ref, hr, problem))
    # Output names must be unique: two rows with the same LR stem would overwrite each other.
    _mark_duplicates(pairs, lambda name, n: f"{n} rows of {path.name} share the output name {name!r}")
    return pairs


def _mark_duplicates(pairs: list[Pair], problem) -> None:
    """Give every pair whose name occurs more than once the problem ``problem(name, count)``."""
    counts: dict[str, int] = {}
    for pair in pairs:
        counts[pair.name] = counts.get(pair.name, 0) + 1
    for pair in pairs:
        if counts[pair.name] > 1 and pair.problem is None:
            pair.problem = problem(pair.name, counts[pair.name])


def discover_pairs(source: str | os.PathLike) -> list[Pair]:
    """All pairs of a folder (both layouts) or a CSV file, sorted by name.

    Raises :class:`RefsrError` when the source does not exist or holds no pair at all.
    """
    source = Path(source)
    if source.is_file():
        if source.suffix.lower() in IMAGE_SUFFIXES:
            raise RefsrError(f"{source}: give the folder holding the pairs (or a CSV file), not one image")
        pairs = _read_csv(source)
    elif source.is_dir():
        flat = _to_pairs(_flat(source), "{name}_{role}.*")
        nested = _to_pairs(_subfolders(source), "{role}/{name}.*")
        pairs = flat + nested
        _mark_duplicates(pairs, lambda name, n: f"{name!r} appears both as NAME_lr.* and as lr/NAME.*")
    else:
        raise RefsrError(f"{source}: no such folder or CSV file")
    if not pairs:
        raise RefsrError(f"{source}: no pairs found (expected NAME_lr.png + NAME_ref.png, "
                         "lr/NAME.png + ref/NAME.png, or a CSV file lr,ref[,hr])")
    pairs.sort(key=lambda p: p.name)
    return pairs


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` → ``(K, N)`` with ``0 ≤ K < N``; raises ``ValueError`` with a readable message."""
    try:
        k_text, n_text = text.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise ValueError(f"{text!r} is not K/N (e.g. 0/4)") from None
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"{text!r}: need N ≥ 1 and 0 ≤ K < N (K counts from 0, e.g. 0/4 … 3/4)")
    return k, n


def shard(pairs: list[Pair], k: int, n: int) -> list[Pair]:
    """Every ``n``-th pair starting at ``k`` of the name-sorted list: shards 0…n−1 partition the pairs."""
    ordered = sorted(pairs, key=lambda p: p.name)
    return ordered[k::n]
