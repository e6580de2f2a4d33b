"""The report's headline: per scale and data kind, the best reference-based network against the baselines.

Computed from the per-image scores of ``report["images"]`` only, so that every difference is taken on
the same images: ``Δ dB`` is the mean over the images both methods have of (network − baseline), and the
speed-up is the bench's own ``median(PatchMatch s) / median(network s)`` on those images. The sentence
that reads each row out is generated from these numbers (see :func:`sentence`).
"""
from __future__ import annotations

from refsr_cli.bench.aggregate import speedup
from refsr_cli.metrics import mean_of

BASELINES = ("patchmatch", "mdsr", "bicubic")
BASELINE_NAMES = {"patchmatch": "PatchMatch", "mdsr": "MDSR", "bicubic": "bicubic"}
# The built-in data labels, as a sentence names them; any other label (a store, a pairs folder) is used as is.
DATA_NAMES = {"synthetic": "synthetic views", "real": "real pairs", "wide/tele": "wide/tele pairs"}
TIE_DB = 0.005          # below half the shown 0.01 dB, two means read the same: a tie


def is_refsr(row: dict) -> bool:
    """Whether a result row is a reference-based network: its variant (a ``--weights`` label's variant is
    the one its checkpoint holds) needs a reference according to the registry. A variant this version does
    not know (a report written by another) is not counted."""
    from refsr_cli.archs import spec
    from refsr_cli.errors import RefsrError

    if row.get("kind") != "network":
        return False
    try:
        return spec(row.get("variant")).needs_reference
    except RefsrError:
        return False


def data_name(label: str) -> str:
    return DATA_NAMES.get(label, label)


def _scores(report: dict, scale: int, data: str) -> dict[str, dict[tuple, tuple[float, float]]]:
    """``{method: {(view, image): (psnr, seconds)}}`` of one scale and data kind (images with a PSNR)."""
    out: dict[str, dict[tuple, tuple[float, float]]] = {}
    for r in report.get("images", []):
        if r["scale"] == scale and r["data"] == data and r.get("psnr") is not None:
            out.setdefault(r["method"], {})[(str(r["view"]), r["image"])] = (float(r["psnr"]), r["seconds"])
    return out


def _mean_psnr(scores: dict[tuple, tuple[float, float]], cases) -> float | None:
    return mean_of(scores[c][0] for c in cases)


def _best(candidates: list[str], scores: dict) -> tuple[str, list[str]]:
    """The candidate of highest mean PSNR — over the images every candidate has, so that a network run on
    fewer (easier) images cannot win by that — and the candidates that tie with it."""
    shared = set.intersection(*(set(scores[m]) for m in candidates))
    mean = {m: _mean_psnr(scores[m], shared or scores[m]) for m in candidates}
    top = max(candidates, key=lambda m: mean[m])            # the first listed wins an exact tie
    return top, [m for m in candidates if m != top and mean[top] - mean[m] < TIE_DB]


def headline(report: dict) -> list[dict]:
    """One row per (scale, data kind) that has a reference-based network, in the report's order.

    Row: ``scale, data, method`` (the best network), ``tied`` (networks within :data:`TIE_DB` of it),
    ``psnr`` and ``cases`` (its mean over its images), per baseline ``vs_<b>`` (mean Δ dB) and
    ``<b>_cases`` (images compared), ``speedup_vs_patchmatch``, and ``sentence``.
    """
    results = report.get("results", [])
    refsr = {r["method"] for r in results if is_refsr(r)}
    order = list(report.get("settings", {}).get("methods") or dict.fromkeys(r["method"] for r in results))
    rows = []
    for scale in dict.fromkeys(r["scale"] for r in results):
        for data in dict.fromkeys(r["data"] for r in results if r["scale"] == scale):
            scores = _scores(report, scale, data)
            candidates = [m for m in order if m in refsr and m in scores]
            if not candidates:
                continue
            best, tied = _best(candidates, scores)
            mine = scores[best]
            row = {"scale": scale, "data": data, "method": best, "tied": tied,
                   "psnr": _mean_psnr(mine, mine), "cases": len(mine)}
            for base in BASELINES:
                theirs = scores.get(base, {})
                common = [c for c in mine if c in theirs]
                row[f"vs_{base}"] = mean_of(mine[c][0] - theirs[c][0] for c in common) if common else None
                row[f"{base}_cases"] = len(common)
            pm = scores.get("patchmatch", {})
            row["speedup_vs_patchmatch"] = speedup({c: s for c, (_, s) in mine.items()},
                                                    {c: s for c, (_, s) in pm.items()})[0]
            row["sentence"] = sentence(row)
            rows.append(row)
    return rows


def _db(value: float, name: str) -> str:
    """``1.76 dB below PatchMatch``, ``… above …`` or ``level with …``: the sign at the shown precision."""
    if abs(value) < TIE_DB:
        return f"level with {name}"
    return f"{abs(value):.2f} dB {'above' if value > 0 else 'below'} {name}"


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def speed_text(ratio: float) -> str:
    return f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:.1f}×" if ratio >= 1 else f"{ratio:.2f}×"


def sentence(row: dict) -> str:
    """The row read out, e.g. ``At ×4 on real pairs the best RefSR network, refsrnet, is 1.76 dB below PatchMatch and
    3.90 dB above MDSR, at 0.77× PatchMatch's speed.`` Bicubic is named only when the network does not beat it."""
    where = f"At ×{row['scale']} on {data_name(row['data'])}"
    if row["tied"]:
        who = (f"{row['method']} ties with {_listed(row['tied'])} as the best RefSR network "
               f"({row['psnr']:.2f} dB); {row['method']}")
    else:
        who = f"the best RefSR network, {row['method']},"
    gaps = [_db(row[f"vs_{b}"], BASELINE_NAMES[b]) for b in ("patchmatch", "mdsr") if row[f"vs_{b}"] is not None]
    if row["vs_bicubic"] is not None and row["vs_bicubic"] < TIE_DB:
        gaps.append(_db(row["vs_bicubic"], "bicubic"))
    said = f"is {_listed(gaps)}" if gaps else f"scores {row['psnr']:.2f} dB (no baseline ran)"
    speed = (f", at {speed_text(row['speedup_vs_patchmatch'])} PatchMatch's speed"
             if row["speedup_vs_patchmatch"] is not None else "")
    return f"{where} {who} {said}{speed}."
