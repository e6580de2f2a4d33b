"""The HDF5 store: schema, atomic deterministic assembly, lazy per-process reading, the authors' layout."""
from __future__ import annotations

import multiprocessing
import pickle

import h5py
import numpy as np
import pytest

from refsr_cli.errors import RefsrError
from refsr_cli.data.store import FORMAT, FORMAT_VERSION, assemble_store, open_store, write_part


def light_field(seed: int, h: int = 12, w: int = 20) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (8, 8, h, w, 3), dtype=np.uint8)


def build(tmp_path, n: int = 3, name: str = "s.h5", **attrs):
    parts, truth = [], []
    for i in range(n):
        views = light_field(i)
        part = tmp_path / f"part{i}.h5"
        write_part(part, views, f"lf{i}")
        parts.append((f"lf{i}", part))
        truth.append(views)
    return assemble_store(tmp_path / name, parts, {"source": "test", "split": "train", **attrs}), truth


def test_schema_and_round_trip(tmp_path):
    path, truth = build(tmp_path, skipped=[], crop=[12, 20])
    with h5py.File(path) as h5:
        views = h5["views"]
        assert views.dtype == np.uint8 and views.shape == (3, 8, 8, 12, 20, 3)
        assert views.chunks == (1, 1, 1, 12, 20, 3) and views.compression == "gzip"
        assert [n.decode() for n in h5["names"][...]] == ["lf0", "lf1", "lf2"]
        assert h5.attrs["format"] == FORMAT and h5.attrs["format_version"] == FORMAT_VERSION
    store = open_store(path)
    assert (store.layout, len(store), store.grid, store.height, store.width) == ("refsr", 3, (8, 8), 12, 20)
    assert store.attrs["source"] == "test" and store.attrs["skipped"] == [] and store.attrs["crop"] == [12, 20]
    for i in range(3):
        np.testing.assert_array_equal(store.views(i), truth[i])
        np.testing.assert_array_equal(store.view(i, 7, 1), truth[i][7, 1])
    with pytest.raises(IndexError):
        store.view(3, 0, 0)
    with pytest.raises(IndexError):
        store.view(0, 8, 0)
    store.close()


def test_assembly_is_byte_deterministic_and_atomic(tmp_path):
    a, _ = build(tmp_path, name="a.h5")
    b, _ = build(tmp_path, name="b.h5")
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # A part of another size fails the assembly and leaves neither the store nor a temporary file.
    write_part(tmp_path / "odd.h5", light_field(9, h=10), "odd")
    with pytest.raises(RefsrError, match="odd: light field is 10×20, the others are 12×20"):
        assemble_store(tmp_path / "c.h5", [("lf0", tmp_path / "part0.h5"), ("odd", tmp_path / "odd.h5")], {})
    assert not (tmp_path / "c.h5").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _read_in_child(store, queue):
    queue.put(store.view(1, 2, 3).tolist())


def test_lazy_handle_survives_pickle_and_fork(tmp_path):
    path, truth = build(tmp_path)
    store = open_store(path)
    assert store._h5 is None, "the file handle must be opened on first access, not at creation"
    store.view(0, 0, 0)  # the parent now holds a handle; a forked child must open its own
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.view(2, 4, 4), truth[2][4, 4])
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(store, queue))
    child.start()
    got = np.array(queue.get(timeout=60), dtype=np.uint8)
    child.join(timeout=60)
    np.testing.assert_array_equal(got, truth[1][2, 3])


def test_authors_layout_is_read_back(tmp_path):
    """The original code's file: /img_HR uint8 [N, 8, 8, 3, H, W] plus LR datasets we ignore."""
    hr = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3, 16, 24), dtype=np.uint8)
    path = tmp_path / "test_x4_x8.h5"
    with h5py.File(path, "w") as h5:
        h5["img_HR"] = hr
        h5["img_LR_4"] = hr[..., ::4, ::4]
    store = open_store(path)
    assert (store.layout, len(store), store.grid, store.height, store.width) == ("authors", 2, (8, 8), 16, 24)
    assert store.names == ["test_x4_x8/00000", "test_x4_x8/00001"]
    np.testing.assert_array_equal(store.view(1, 3, 6), hr[1, 3, 6].transpose(1, 2, 0))
    np.testing.assert_array_equal(store.views(0), hr[0].transpose(0, 1, 3, 4, 2))


def test_bad_files_give_one_line_errors(tmp_path):
    with pytest.raises(RefsrError, match="no such store"):
        open_store(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(RefsrError, match="junk.h5: not a readable HDF5 file"):
        open_store(junk)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["data"] = np.zeros(3)
    with pytest.raises(RefsrError, match=r"neither /views .* nor /img_HR"):
        open_store(other)
    wrong = tmp_path / "wrong.h5"
    with h5py.File(wrong, "w") as h5:
        h5["img_HR"] = np.zeros((1, 8, 8, 4, 5), np.uint8)
    with pytest.raises(RefsrError, match="expected"):
        open_store(wrong)
