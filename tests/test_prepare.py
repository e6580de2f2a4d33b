"""`refsr prepare`: decoding real PNG files, splitting, resuming, bad input, the CLI hand-off."""
from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import click
import h5py
import imageio.v3 as iio
import numpy as np
import pytest
from click.testing import CliRunner

from refsr_cli.prepare import lightfield, pipeline as prepare
from refsr_cli.cli import main
from refsr_cli.commands import pipeline
from refsr_cli.commands.prepare import command as prepare_command
from refsr_cli.errors import RefsrError
from refsr_cli.data.files import folder_lock
from refsr_cli.data.store import open_store

H, W = 10, 14          # views per light field in the test data (tiny)
CROP = (8, 12)


def pattern_views(seed: int, grid: int = 14, h: int = H, w: int = W) -> np.ndarray:
    """``uint8 [grid, grid, h, w, 3]``; every view differs (the view index is in the blue channel)."""
    rng = np.random.default_rng(seed)
    views = rng.integers(0, 256, (grid, grid, h, w, 3), dtype=np.uint8)
    views[..., 2] = (np.arange(grid)[:, None] * grid + np.arange(grid)[None, :]).astype(np.uint8)[:, :, None, None]
    return views


def interleave(views: np.ndarray, extra=(5, 9)) -> np.ndarray:
    """Lenslet image with ``img[y*14 + v, x*14 + u] = views[v, u, y, x]`` plus a ragged border."""
    g, _, h, w, _ = views.shape
    img = views.transpose(2, 0, 3, 1, 4).reshape(h * g, w * g, 3)
    pad = np.full((h * g + extra[0], w * g + extra[1], 3), 77, np.uint8)
    pad[: h * g, : w * g] = img
    return pad


def write_png48(path: Path, rgb16: np.ndarray) -> None:
    """A real 16-bit RGB PNG, written by hand (Pillow cannot write 16-bit colour)."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_lenslet(path: Path, views: np.ndarray, bits: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = interleave(views)
    if bits == 16:
        # The low byte differs from the high byte, so reading only 8 of the 16 bits would show.
        write_png48(path, img.astype(np.uint16) * 257 + (img > 0) * 100 - (img == 255) * 200)
    else:
        iio.imwrite(path, img)


def make_flower(root: Path, n: int, start: int = 0) -> dict[str, np.ndarray]:
    """n lenslet PNGs under root (two sub-folders, one 16-bit file); returns name → 14×14 views."""
    truth = {}
    for k in range(start, start + n):
        views = pattern_views(k)
        name = f"{'a' if k % 2 else 'b'}/IMG_{k:04d}_eslf"
        write_lenslet(root / f"{name}.png", views, bits=16 if k == start else 8)
        truth[name] = views
    return truth


def run_cli(*args):
    return CliRunner().invoke(main, ["--quiet", *map(str, args)])


def test_lenslet_round_trip_cli(tmp_path):
    truth = make_flower(tmp_path / "src", 5)
    out = tmp_path / "out"
    result = run_cli("prepare", "flower", tmp_path / "src", "--out", out, "--test-count", 2,
                     "--crop", *CROP, "--jobs", 1)
    assert result.exit_code == 0, result.output
    train, test = open_store(out / "train.h5"), open_store(out / "test.h5")
    assert (len(train), len(test)) == (3, 2)
    assert sorted(train.names + test.names) == sorted(truth)
    assert set(train.names).isdisjoint(test.names)
    for st in (train, test):
        assert st.attrs["split"] in ("train", "test") and st.attrs["crop"] == list(CROP)
        assert (st.grid, st.height, st.width) == ((8, 8), *CROP)
        for i, name in enumerate(st.names):
            expected = truth[name][3:11, 3:11, : CROP[0], : CROP[1]]
            np.testing.assert_array_equal(st.views(i), expected)
            np.testing.assert_array_equal(st.view(i, 2, 5), expected[2, 5])
    assert not list(out.glob(".*")), "partial folder or temporary files left behind"


def test_lenslet_no_crop_keeps_whole_views(tmp_path):
    views = pattern_views(3)
    write_lenslet(tmp_path / "x.png", views)
    decoded = lightfield.decode_lenslet(tmp_path / "x.png", crop=None)
    np.testing.assert_array_equal(decoded, views[3:11, 3:11])


def test_split_is_deterministic_and_seeded(tmp_path):
    make_flower(tmp_path / "src", 6)
    a = prepare.prepare_light_fields("flower", tmp_path / "src", tmp_path / "a", crop=CROP, test_count=2,
                                     seed=5, jobs=1)
    b = prepare.prepare_light_fields("flower", tmp_path / "src", tmp_path / "b", crop=CROP, test_count=2,
                                     seed=5, jobs=1)
    assert (tmp_path / "a/test.h5").read_bytes() == (tmp_path / "b/test.h5").read_bytes()
    assert open_store(a["test"]).attrs["seed"] == 5
    others = {tuple(open_store(prepare.prepare_light_fields(
        "flower", tmp_path / "src", tmp_path / f"s{s}", crop=CROP, test_count=2, seed=s, jobs=1)["test"]).names)
        for s in range(4)}
    assert len(others) > 1, "the seed does not change the split"


def test_split_file_and_missing_split(tmp_path):
    make_flower(tmp_path / "src", 4)
    split = tmp_path / "split.txt"
    split.write_text("# test set\nIMG_0001_eslf\ntest b/IMG_0002_eslf\n\ntrain a/IMG_0003_eslf\n")
    r = prepare.prepare_light_fields("flower", tmp_path / "src", tmp_path / "o", crop=CROP,
                                     split_file=split, jobs=1)
    assert open_store(r["test"]).names == ["a/IMG_0001_eslf", "b/IMG_0002_eslf"]
    assert open_store(r["train"]).attrs["split_rule"] == "split-file split.txt"
    # Not the whole dataset and no split given: refuse, saying how to choose one.
    result = run_cli("prepare", "flower", tmp_path / "src", "--out", tmp_path / "p", "--crop", *CROP)
    assert result.exit_code == 1
    assert "found 4 light fields" in result.output and "--test-count" in result.output
    split.write_text("no_such_light_field\n")
    with pytest.raises(RefsrError, match="no_such_light_field"):
        prepare.prepare_light_fields("flower", tmp_path / "src", tmp_path / "q", crop=CROP,
                                     split_file=split, jobs=1)


def test_papers_split_when_the_whole_dataset_is_present(tmp_path, monkeypatch):
    # Shrink "the whole Flower dataset" to 5 light fields; the rule under test is unchanged.
    monkeypatch.setitem(prepare.PAPER_SPLITS, "flower", {"total": 5, "test": 2})
    make_flower(tmp_path / "src", 5)
    r = prepare.prepare_light_fields("flower", tmp_path / "src", tmp_path / "o", crop=CROP, jobs=1)
    assert (r["train_count"], r["test_count"]) == (3, 2)
    assert open_store(r["test"]).attrs["split_rule"] == "paper"
    assert prepare.PAPER_SPLITS["lfvideo"] == {"total": 1350, "test": 270}


def make_subaperture(folder: Path, views: np.ndarray, fmt: str, base: int = 0, gray: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    g = views.shape[0]
    for r in range(g):
        for c in range(g):
            img = views[r, c, :, :, 0] if gray else views[r, c]
            iio.imwrite(folder / fmt.format(r=r + base, c=c + base), img)
    iio.imwrite(folder / "thumbnail.png", views[0, 0])  # no index: ignored


def test_subaperture_folders_round_trip(tmp_path):
    src = tmp_path / "LFVideo"
    v14, v8 = pattern_views(11), pattern_views(12, grid=8)
    make_subaperture(src / "seq1" / "frame_007", v14, "view_{r:02d}_{c:02d}.png")
    make_subaperture(src / "seq2", v8, "{r}-{c}.png", base=1)
    make_flower(src / "lenslet", 1, start=40)  # the layouts may be mixed
    sources = lightfield.discover(src)
    assert [(s.name, s.layout) for s in sources] == [
        ("lenslet/b/IMG_0040_eslf", "lenslet"), ("seq1/frame_007", "subaperture"), ("seq2", "subaperture")]
    r = prepare.prepare_light_fields("lfvideo", src, tmp_path / "out", crop=CROP, test_count=1, seed=0, jobs=1)
    stores = [open_store(r["train"]), open_store(r["test"])]
    got = {name: st.views(i) for st in stores for i, name in enumerate(st.names)}
    np.testing.assert_array_equal(got["seq1/frame_007"], v14[3:11, 3:11, :8, :12])
    np.testing.assert_array_equal(got["seq2"], v8[:, :, :8, :12])
    assert stores[0].attrs["source"] == "lfvideo"


def test_subaperture_grayscale_and_incomplete(tmp_path):
    views = pattern_views(2, grid=8)
    make_subaperture(tmp_path / "g", views, "{r}_{c}.png", gray=True)
    decoded = lightfield.decode_subaperture_folder(tmp_path / "g", crop=None)
    np.testing.assert_array_equal(decoded, np.repeat(views[..., :1], 3, axis=-1))
    make_subaperture(tmp_path / "m", pattern_views(2, grid=9), "{r}_{c}.png")
    (tmp_path / "m" / "4_6.png").unlink()
    with pytest.raises(RefsrError, match=r"m: view \(4, 6\) is missing"):
        lightfield.decode_subaperture_folder(tmp_path / "m")


class Interrupt:
    """Raises KeyboardInterrupt after ``after`` light fields are committed (like Ctrl-C mid-run)."""

    def __init__(self, after: int):
        self.after, self.calls = after, 0

    def __call__(self, done, total):
        self.calls += 1
        if self.calls >= self.after:
            raise KeyboardInterrupt


def test_resume_after_interrupt_gives_identical_files(tmp_path):
    make_flower(tmp_path / "src", 6)
    kwargs = dict(crop=CROP, test_count=2, seed=1)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_light_fields("flower", tmp_path / "src", out, jobs=1, progress=Interrupt(3), **kwargs)
    partial = out / prepare.PARTIAL_DIR
    assert not (out / "train.h5").exists() and not (out / "test.h5").exists()
    assert len(list(partial.glob("*.h5"))) == 3
    # A worker killed mid-write leaves a temporary file behind; it must not be taken for a part.
    (partial / ".000005.h5.garbage.tmp").write_bytes(b"half a file")
    # A different command is refused while an interrupted run waits to be resumed.
    with pytest.raises(RefsrError, match="different arguments"):
        prepare.prepare_light_fields("flower", tmp_path / "src", out, jobs=1, crop=CROP, test_count=2, seed=2)
    # A prepare killed while it assembled a store leaves its temporary next to the stores.
    (out / ".test.k1ll3d0.h5.tmp").write_bytes(b"half a store")
    # Another prepare into the folder is refused while one runs there.
    with folder_lock(out), pytest.raises(RefsrError, match="in use .* another refsr prepare"):
        prepare.prepare_light_fields("flower", tmp_path / "src", out, jobs=1, **kwargs)
    calls = []
    r = prepare.prepare_light_fields("flower", tmp_path / "src", out, jobs=1,
                                     progress=lambda d, t: calls.append(d), **kwargs)
    assert calls == [4, 5, 6], "resume redid finished light fields"
    assert not partial.exists()
    assert sorted(p.name for p in out.iterdir()) == ["test.h5", "train.h5"]
    # An uninterrupted run, in parallel this time: the same bytes.
    fresh = prepare.prepare_light_fields("flower", tmp_path / "src", tmp_path / "fresh", jobs=2, **kwargs)
    for split in ("train", "test"):
        assert Path(r[split]).read_bytes() == Path(fresh[split]).read_bytes()


def test_corrupt_input_fails_cleanly_or_is_skipped(tmp_path):
    make_flower(tmp_path / "src", 4)
    bad = tmp_path / "src" / "a" / "IMG_0001_eslf.png"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated PNG
    out = tmp_path / "out"
    result = run_cli("prepare", "flower", tmp_path / "src", "--out", out, "--test-count", 1,
                     "--crop", *CROP, "--jobs", 1)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refsr: error: ") and str(bad) in lines[0]
    assert not list(out.glob("*.h5"))
    result = run_cli("prepare", "flower", tmp_path / "src", "--out", out, "--test-count", 1,
                     "--crop", *CROP, "--jobs", 1, "--skip-bad")
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and str(bad) in result.output
    train, test = open_store(out / "train.h5"), open_store(out / "test.h5")
    assert len(train) + len(test) == 3 and "a/IMG_0001_eslf" not in train.names + test.names
    assert train.attrs["skipped"] == ["a/IMG_0001_eslf"]


def test_wrongly_sized_light_field(tmp_path):
    make_flower(tmp_path / "src", 3)
    small = tmp_path / "src" / "b" / "IMG_0002_eslf.png"
    write_lenslet(small, pattern_views(9, h=5, w=14))
    result = run_cli("prepare", "flower", tmp_path / "src", "--out", tmp_path / "o", "--test-count", 1,
                     "--crop", *CROP, "--jobs", 1)
    assert result.exit_code == 1
    assert re.search(rf"{re.escape(str(small))}: views are 5×14, smaller than the crop 8×12", result.output)
    # Without a crop, sizes must agree across light fields; the odd one is named.
    with pytest.raises(RefsrError, match=r"IMG_0002_eslf.png: light field is 5×14, the others are 10×14"):
        prepare.prepare_light_fields("flower", tmp_path / "src", tmp_path / "n", crop=None, test_count=1, jobs=1)
    assert not list((tmp_path / "n").glob("*.h5"))


def test_cli_records_stores_for_chained_stages(tmp_path):
    make_flower(tmp_path / "src", 3)
    seen = {}

    @click.group(chain=True)
    def group():
        pass

    @group.command("probe")
    def probe():
        p = pipeline()
        seen.update(store_dir=p.store_dir, train=p.train_store, test=p.test_store)

    group.add_command(prepare_command)
    result = CliRunner().invoke(group, ["prepare", "flower", str(tmp_path / "src"), "--out", str(tmp_path / "o"),
                                        "--test-count", "1", "--crop", *map(str, CROP), "--jobs", "1", "probe"])
    assert result.exit_code == 0, result.output
    assert seen == {"store_dir": tmp_path / "o", "train": tmp_path / "o/train.h5", "test": tmp_path / "o/test.h5"}


def test_help_has_examples():
    result = run_cli("prepare", "--help")
    assert result.exit_code == 0
    assert "refsr prepare flower" in result.output and "--skip-bad" in result.output


def test_prepare_synthetic_end_to_end(tmp_path):
    out = tmp_path / "syn"
    result = run_cli("prepare", "synthetic", "--out", out, "--count", 2, "--test-count", 1, "--seed", 3,
                     "--size", 16, 24, "--max-disparity", 4, "--jobs", 1)
    assert result.exit_code == 0, result.output
    train, test = open_store(out / "train.h5"), open_store(out / "test.h5")
    assert (len(train), len(test), train.height, train.width) == (2, 1, 16, 24)
    assert train.attrs["synthetic"] and train.attrs["source"] == "synthetic"
    assert train.attrs["synthetic_params"]["max_disparity"] == 4.0
    from refsr_cli.prepare.synthetic import render_light_field

    expected = render_light_field(prepare.synthetic_seed(3, "train", 1), height=16, width=24, max_disparity=4.0)
    np.testing.assert_array_equal(train.views(1), expected)
    assert not np.array_equal(train.views(0), train.views(1))
    with h5py.File(out / "test.h5") as h5:
        assert h5["views"].shape == (1, 8, 8, 16, 24, 3)


# ------------------------------------------------------------------------------------------ misuse (issue 20)

def test_failed_prepare_does_not_block_the_corrected_command(tmp_path):
    out = tmp_path / "syn"
    args = ["prepare", "synthetic", "--out", out, "--count", 2, "--test-count", 1, "--size", 16, 24, "--jobs", 1]
    result = run_cli(*args, "--max-disparity", 100)       # more than the renderer allows at width 24
    assert result.exit_code == 1 and "max_disparity" in result.output
    assert not out.exists() or not list(out.iterdir()), "the failed run left files behind"
    result = run_cli(*args, "--max-disparity", 4)
    assert result.exit_code == 0, result.output
    make_flower(tmp_path / "src", 3)
    flower = ["prepare", "flower", tmp_path / "src", "--out", tmp_path / "f", "--test-count", 1, "--jobs", 1]
    result = run_cli(*flower, "--crop", 64, 64)            # larger than the 10×14 views
    assert result.exit_code == 1 and "smaller than the crop" in result.output
    result = run_cli(*flower, "--crop", *CROP)
    assert result.exit_code == 0, result.output
    assert not list((tmp_path / "f").glob(".*"))


def test_partial_run_with_finished_parts_is_still_kept(tmp_path):
    """Only a partial folder without a finished light field is replaced: finished work is never dropped."""
    make_flower(tmp_path / "src", 3)
    out = tmp_path / "f"
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_light_fields("flower", tmp_path / "src", out, crop=CROP, test_count=1, jobs=1,
                                     progress=Interrupt(1))
    with pytest.raises(RefsrError, match="different arguments"):
        prepare.prepare_light_fields("flower", tmp_path / "src", out, crop=CROP, test_count=1, seed=4, jobs=1)


@pytest.mark.parametrize("args", [["flower"], ["lfvideo"], ["video"], ["synthetic", "--test-count", "0"],
                                  ["flower", "src", "--test-count", "0"], ["synthetic", "extra"],
                                  ["synthetic", "--crop", "8", "8", "--no-crop"], ["flower", "src", "--gap", "2"],
                                  ["synthetic", "--max-disparity", "0"], ["video", "src", "--split-file", "split.txt"],
                                  ["synthetic", "--split-file", "split.txt"]])
def test_usage_errors_exit_2(tmp_path, args):
    (tmp_path / "src").mkdir()
    (tmp_path / "split.txt").write_text("test a\n")    # --split-file: a file that exists, refused for the kind
    paths = ("src", "split.txt")
    result = CliRunner().invoke(main, ["--quiet", "prepare", *[str(tmp_path / a) if a in paths else a for a in args],
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_help_of_test_count_says_what_is_accepted():
    result = run_cli("prepare", "--help")
    text = " ".join(result.output.split())
    option = text.split("--test-count INTEGER RANGE", 1)[1].split("--split-file FILE", 1)[0]
    assert "at least 1" in option and "[x>=1]" in option


@pytest.mark.parametrize("kind", [["flower", "src", "--test-count", "1", "--crop", "8", "12"],
                                  ["synthetic", "--count", "1", "--test-count", "1", "--size", "16", "16"],
                                  ["video", "src"]])
def test_out_under_a_regular_file_is_a_clean_error(tmp_path, kind):
    make_flower(tmp_path / "src", 2)
    (tmp_path / "file").write_text("not a folder")
    result = run_cli("prepare", *[tmp_path / a if a == "src" else a for a in kind], "--out", tmp_path / "file" / "out",
                     "--jobs", 1)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("refsr: error:") and str(tmp_path / "file") in result.output
    assert "Traceback" not in result.output
