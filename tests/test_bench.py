"""`refsr bench`: report files, an independently recomputed PSNR, the per-image cache, the HTML page.

The test store holds two light fields cut from scikit-image photos with a known constant disparity:
view (r, c) is the photo shifted by (c, r) pixels, so view (k, k) is displaced from Ref = (0, 0) by
k·√2 pixels — the bench's parallax estimate can be checked against it.
"""
import json
import math
import re
import shutil

import h5py
import numpy as np
import pytest
import skimage.data
import torch
from click.testing import CliRunner

from refsr_cli.archs import build_model, spec
from refsr_cli.archs.checkpoint import save_checkpoint
from refsr_cli.cli import main
from refsr_cli.ops.resize import imresize
from refsr_cli.data.store import assemble_store, write_part

H, W = 80, 112          # IFC needs ≥ 72 px; multiples of 4 and 8
SCALE = 4


def _make_store(folder):
    parts = []
    for i, photo in enumerate([skimage.data.astronaut(), skimage.data.coffee()]):
        big = photo[100:100 + H + 7, 150:150 + W + 7]
        views = np.stack([np.stack([big[r:r + H, c:c + W] for c in range(8)]) for r in range(8)])
        part = folder / f"lf{i}.part.h5"
        write_part(part, np.ascontiguousarray(views), f"lf{i}")
        parts.append((f"lf{i}", part))
    return assemble_store(folder / "test.h5", parts, {"source": "test"})


def _tiny(name, path, seed=0):
    torch.manual_seed(seed)
    save_checkpoint(path, build_model(name, **spec(name).tiny), SCALE)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    store = _make_store(root)
    return root, store, _tiny("crossnet", root / "crossnet.pt"), _tiny("mdsr", root / "mdsr.pt")


def _bench(args):
    result = CliRunner().invoke(main, ["--quiet", "bench", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def _independent_bicubic_psnr(store, k):
    """Mean PSNR of bicubic on view (k, k), from the raw HDF5 and the resize function only."""
    values = []
    with h5py.File(store, "r") as h5:
        for i in range(h5["views"].shape[0]):
            hr = h5["views"][i, k, k].astype(np.float64) / 255.0            # H×W×3
            t = torch.from_numpy(hr.transpose(2, 0, 1).copy()).float()
            lr = imresize(t, size=(H // SCALE, W // SCALE)).clamp(0, 1)
            sr = imresize(lr, size=(H, W)).clamp(0, 1).numpy().astype(np.float64).transpose(1, 2, 0)
            mse = np.mean((sr - hr) ** 2)
            values.append(10 * math.log10(1.0 / mse))
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def first_run(setup):
    """One bench over views 1 and 7 with bicubic, PatchMatch and the tiny CrossNet: ``(out, report, stdout)``."""
    root, store, crossnet, _ = setup
    out = root / "report"
    result = _bench(["--data", str(store), "--scales", str(SCALE), "--views", "1,7", "--out", str(out),
                     "--methods", "bicubic,patchmatch,crossnet", "--weights", f"crossnet={crossnet}", "--jobs", "2"])
    return out, json.loads((out / "report.json").read_text()), result.output


def _rows(report):
    return {(r["method"], r["view"]): r for r in report["results"]}


def test_bench_writes_table_and_three_reports(first_run):
    out, report, stdout = first_run
    assert "PSNR" in stdout                         # the rich table on stdout
    for name in ("report.json", "report.md", "report.html"):
        assert (out / name).is_file()
    rows = _rows(report)
    assert set(rows) == {(m, v) for m in ("bicubic", "patchmatch", "crossnet") for v in (1, 7)}
    assert all(r["n"] == 2 and r["scale"] == SCALE for r in rows.values())
    assert report["cache"]["computed"] == 12 and report["cache"]["reused"] == 0


def test_bench_psnr_matches_an_independent_recomputation(setup, first_run):
    # One PSNR recomputed without the bench, the store reader or the metrics module.
    _, store, _, _ = setup
    assert _rows(first_run[1])[("bicubic", 7)]["psnr"] == pytest.approx(_independent_bicubic_psnr(store, 7), abs=1e-3)


def test_bench_patchmatch_beats_bicubic_and_parallax_is_measured(first_run):
    rows = _rows(first_run[1])
    # PatchMatch pastes reference patches: with a pure shift between views it must beat bicubic clearly.
    assert rows[("patchmatch", 7)]["psnr"] > rows[("bicubic", 7)]["psnr"] + 2
    # Parallax estimated by block matching against the known displacement k·√2.
    assert rows[("bicubic", 1)]["parallax"] == pytest.approx(math.sqrt(2), abs=0.3)
    assert rows[("bicubic", 7)]["parallax"] == pytest.approx(7 * math.sqrt(2), abs=0.5)


def test_bench_reports_speed_and_environment(first_run):
    report = first_run[1]
    assert _rows(report)[("crossnet", 7)]["speedup_vs_patchmatch"] > 0
    assert {s["method"] for s in report["speed"]} == {"bicubic", "crossnet"}
    for key in ("python", "torch", "cpu_count", "device"):
        assert key in report["environment"]


def test_bench_markdown_has_one_row_per_result(first_run):
    md = (first_run[0] / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| crossnet | 4 |") and "±" in line]
    assert len(table) == 2 and "(7,7)" in md


def test_bench_html_is_self_contained(first_run):
    # The table, an inline SVG plot, embedded crops — and no external file reference.
    page = (first_run[0] / "report.html").read_text()
    assert "<table" in page and "<svg" in page and "crossnet" in page
    assert page.count('src="data:image/png;base64,') >= 2 * 6   # 2 showcases × (LR, GT, 3 methods, Ref)
    srcs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert srcs and all(s.startswith("data:") for s in srcs)
    assert "<link" not in page and "url(" not in page


def test_bench_cache_computes_only_the_added_method(setup, first_run, tmp_path):
    # On a copy of the first run's folder, so the other tests keep reading the original.
    _, store, crossnet, mdsr = setup
    out = tmp_path / "report"
    shutil.copytree(first_run[0], out)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cache").glob("*.json")}
    _bench(["--data", str(store), "--scales", str(SCALE), "--views", "7", "--out", str(out),
            "--methods", "bicubic,patchmatch,crossnet,mdsr", "--weights", f"crossnet={crossnet}",
            "--weights", f"mdsr={mdsr}"])
    report = json.loads((out / "report.json").read_text())
    assert report["cache"]["computed_by_method"] == {"mdsr": 2}
    assert report["cache"]["reused"] == 6
    after = {p.name: p.stat().st_mtime_ns for p in (out / "cache").glob("*.json")}
    assert all(after[name] == mtime for name, mtime in before.items())
    rows = _rows(report)
    assert rows[("patchmatch", 7)]["psnr"] == _rows(first_run[1])[("patchmatch", 7)]["psnr"]
    assert ("mdsr", 7) in rows


def test_bench_clears_what_a_killed_bench_left_and_refuses_a_second_bench(setup, first_run, tmp_path):
    """A bench killed mid-write leaves temporaries of cache records, crops and report files: the next bench
    into the folder removes them (and nothing else); while one bench runs, another into its folder fails."""
    from refsr_cli.data.files import folder_lock

    _, store, _, _ = setup
    out = tmp_path / "report"
    shutil.copytree(first_run[0], out)
    debris = [out / ".report.k1ll3d00.json.tmp", out / "cache" / ".bicubic__x.a1b2c3d4.json.tmp",
              out / "cache" / ".bicubic__x.sr.q9w8e7r6.png.tmp", out / "cache" / "pairs" / ".p__x4.zz00yy11.json.tmp"]
    for path in debris:
        path.write_bytes(b"half a file")
    (out / "notes.txt.tmp").write_text("not ours")            # not an atomic_write temporary: left alone
    (out / ".notes.a1b2c3d4.txt.tmp").write_text("not ours")  # another program's, in a folder of the user's
    args = ["--data", str(store), "--scales", str(SCALE), "--views", "7", "--out", str(out), "--methods", "bicubic"]
    with folder_lock(out):
        result = CliRunner().invoke(main, ["--quiet", "bench", *args])
    assert result.exit_code == 1 and "in use — another refsr bench" in result.output
    assert all(path.exists() for path in debris)
    _bench(args)
    assert not any(path.exists() for path in debris) and (out / "notes.txt.tmp").exists()
    assert (out / ".notes.a1b2c3d4.txt.tmp").exists()


def test_bench_changed_checkpoint_is_never_served_stale_results(setup, tmp_path):
    _, store, _, _ = setup
    weights = _tiny("crossnet", tmp_path / "crossnet.pt")
    args = ["--data", str(store), "--scales", str(SCALE), "--views", "7", "--out", str(tmp_path / "report"),
            "--methods", "bicubic,crossnet", "--weights", f"crossnet={weights}"]
    _bench(args)
    _tiny("crossnet", weights, seed=1)          # same path, other weights
    _bench(args)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["cache"]["computed_by_method"] == {"crossnet": 2}


def test_bench_bad_input_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["bench", "--data", str(tmp_path / "missing.h5"), "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "missing.h5" in result.output and "Traceback" not in result.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(main, ["bench", "--methods", "bicubic", "--weights", f"crossnet={bad}",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 1 and "bad.pt" in result.output


def test_builtin_set(tmp_path, monkeypatch):
    """The built-in synthetic store is rendered once into $REFSR_CACHE and reused."""
    from refsr_cli.bench import builtin_data
    from refsr_cli.bench.sources import StoreSource

    monkeypatch.setenv("REFSR_CACHE", str(tmp_path / "cache"))
    path = builtin_data.builtin_store(count=1, size=(64, 64))
    assert path.is_file() and str(path).startswith(str(tmp_path / "cache"))
    stamp = path.stat().st_mtime_ns
    assert builtin_data.builtin_store(count=1, size=(64, 64)) == path and path.stat().st_mtime_ns == stamp
    disparity = builtin_data.builtin_disparity(path)
    assert set(disparity) == {"builtin-000"} and 0 < disparity["builtin-000"] <= builtin_data.DEFAULT_MAX_DISPARITY
    source = StoreSource(path, [7], label="synthetic", disparity=disparity)
    name, lr, ref, hr = source.pairs(8, 7)[0]
    value, how = source.parallax(name, 7, hr, ref)
    assert how == "ground-truth disparity" and value == pytest.approx(math.sqrt(2) * disparity[name])


# ------------------------------------------------------------------------------------------ misuse (issue 20)

def test_builtin_set_clears_a_killed_render_and_waits_for_a_concurrent_one(tmp_path, monkeypatch, capsys):
    """A render killed mid-write leaves temporaries in the set's folder: the next render removes them. A bench
    that finds another rendering the set waits for it (and says so) instead of rendering it again."""
    import threading

    from refsr_cli.bench import builtin_data
    from refsr_cli.data.files import folder_lock

    monkeypatch.setenv("REFSR_CACHE", str(tmp_path / "cache"))
    folder = builtin_data.builtin_store_path(count=1, size=(64, 64)).parent
    (folder / "parts").mkdir(parents=True)
    debris = [folder / ".test.k1ll3d00.h5.tmp", folder / "parts" / ".builtin-000.a1b2c3d4.h5.tmp"]
    for path in debris:
        path.write_bytes(b"half a file")
    held, release = threading.Event(), threading.Event()

    def other_bench():
        with folder_lock(folder):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=other_bench)
    thread.start()
    held.wait(10)
    threading.Timer(0.5, release.set).start()
    path = builtin_data.builtin_store(count=1, size=(64, 64))
    thread.join()
    assert "another refsr bench is rendering the built-in set; waiting" in capsys.readouterr().err
    assert path.is_file() and not any(p.exists() for p in debris)


def _write_pairs(folder, store, scale=SCALE):
    """The store's view-(1,1) pairs as NAME_lr/ref/hr.png files, plus a pair whose LR is 3×3 px."""
    from refsr_cli.data.image_io import write_image
    from refsr_cli.data.lightfield_dataset import iter_test_pairs

    for name, lr, ref, hr in iter_test_pairs(store, scale, 1):
        for role, image in (("lr", lr), ("ref", ref), ("hr", hr)):
            write_image(folder / f"{name}_{role}.png", image)
    torch.manual_seed(0)
    write_image(folder / f"speck_lr.png", torch.rand(3, 3, 3))
    for role in ("ref", "hr"):
        write_image(folder / f"speck_{role}.png", torch.rand(3, 3 * scale, 3 * scale))
    return folder


def test_bench_that_computes_nothing_fails(setup, tmp_path):
    root, store, _, _ = setup
    pairs = _write_pairs(tmp_path / "pairs", store)
    for scales in ("3", "8"):           # the pairs are ×4: no HR is 3× or 8× its LR
        result = CliRunner().invoke(main, ["--quiet", "bench", "--pairs", str(pairs), "--methods", "bicubic",
                                           "--scales", scales, "--out", str(tmp_path / "r"), "--jobs", "1"])
        assert result.exit_code == 1, result.output
        assert "refsr: error:" in result.output and "no result" in result.output
        assert not (tmp_path / "r" / "report.json").exists()


def test_bench_leaves_out_pairs_infer_refuses(setup, tmp_path):
    root, store, _, _ = setup
    pairs = _write_pairs(tmp_path / "pairs", store)
    result = CliRunner().invoke(main, ["bench", "--pairs", str(pairs), "--methods", "bicubic", "--scales", "4",
                                       "--out", str(tmp_path / "r"), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert "speck" in result.output and "8 px" in result.output
    rows = json.loads((tmp_path / "r" / "report.json").read_text())["results"]
    assert [r["n"] for r in rows] == [2]


@pytest.mark.parametrize("option", [["--scales", "0"], ["--scales", "1"], ["--methods", "foo"],
                                    ["--views", "0"]])
def test_bench_bad_option_values_are_usage_errors(setup, tmp_path, option):
    root, store, _, _ = setup
    result = CliRunner().invoke(main, ["bench", "--data", str(store), "--out", str(tmp_path / "r"), *option])
    assert result.exit_code == 2, result.output
    assert option[0] in result.output and "Traceback" not in result.output


def test_bench_accepts_a_prepare_folder_as_train_does(setup, tmp_path):
    root, store, _, _ = setup
    folder = tmp_path / "prepared"
    folder.mkdir()
    shutil.copy(store, folder / "test.h5")
    _bench(["--data", str(folder), "--methods", "bicubic", "--scales", "4", "--views", "1",
            "--out", str(tmp_path / "r"), "--jobs", "1"])
    rows = json.loads((tmp_path / "r" / "report.json").read_text())["results"]
    assert rows and rows[0]["n"] == 2
    result = CliRunner().invoke(main, ["bench", "--data", str(tmp_path), "--out", str(tmp_path / "r2")])
    assert result.exit_code == 1 and "test.h5" in result.output


def test_bench_corrupt_chunk_names_store_light_field_and_view_and_can_be_skipped(setup, tmp_path, corrupt_view):
    root, store, _, _ = setup
    bad = tmp_path / "bad.h5"
    shutil.copy(store, bad)
    corrupt_view(bad, 1, 1, 1)
    args = ["bench", "--data", str(bad), "--methods", "bicubic", "--scales", "4", "--views", "1",
            "--out", str(tmp_path / "r"), "--jobs", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("refsr: error:") and str(bad) in line
    assert "lf1" in line and "view (1, 1)" in line and "--skip-bad" in line
    result = CliRunner().invoke(main, args + ["--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "1 unreadable" in result.output
    rows = json.loads((tmp_path / "r" / "report.json").read_text())["results"]
    assert [r["n"] for r in rows] == [1]


def test_a_short_call_is_timed_a_second_time_only_on_a_size_its_method_has_not_run():
    """The bench times a short call twice only where one-time costs can be in it: the first call of a
    method object on an input size. A later call on a size it has run is timed once."""
    from refsr_cli.bench.cache import run_unit
    from refsr_cli.inference.methods import Method

    model = build_model("mdsr", **spec("mdsr").tiny)
    method = Method.from_model(model, SCALE)
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    torch.manual_seed(0)
    counts = []
    for size in ((16, 16), (16, 16), (24, 16), (16, 16)):
        before = len(forwards)
        sr, _, facts = run_unit(method, torch.rand(3, *size), torch.rand(3, SCALE * size[0], SCALE * size[1]))
        counts.append(len(forwards) - before)
        assert sr.shape == (3, SCALE * size[0], SCALE * size[1]) and facts["seconds"] < 0.5
    assert counts == [2, 1, 2, 1]
