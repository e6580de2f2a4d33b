"""LightFieldDataset and iter_test_pairs on real stores (ours and the authors' layout)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from refsr_cli.data.lightfield_dataset import LightFieldDataset, iter_test_pairs
from refsr_cli.ops.resize import downscale
from refsr_cli.data.store import assemble_store, write_part

H, W = 64, 96


def coded_light_field(i: int) -> np.ndarray:
    """Each pixel says where it is: R = y, G = x, B = 8·row + col + 64·i (so crops/shifts can be read back)."""
    views = np.empty((8, 8, H, W, 3), np.uint8)
    views[..., 0] = np.arange(H)[:, None]
    views[..., 1] = np.arange(W)[None, :]
    views[..., 2] = ((np.arange(8)[:, None] * 8 + np.arange(8)[None, :] + 64 * i) % 256)[:, :, None, None]
    return views


@pytest.fixture()
def store_path(tmp_path):
    parts = []
    for i in range(3):
        write_part(tmp_path / f"{i}.h5", coded_light_field(i), f"lf{i}")
        parts.append((f"lf{i}", tmp_path / f"{i}.h5"))
    return assemble_store(tmp_path / "train.h5", parts, {"split": "train"})


def decode(t: torch.Tensor) -> np.ndarray:
    return np.rint(t.numpy() * 255).astype(int)


def test_fixed_views_whole_image(store_path):
    ds = LightFieldDataset(store_path, 4, crop=None, views=(3, 3), parallax_shift=0, flips=False)
    assert len(ds) == 3
    lr, ref, hr = ds[1]
    assert lr.dtype == ref.dtype == hr.dtype == torch.float32
    assert (lr.shape, ref.shape, hr.shape) == ((3, 16, 24), (3, H, W), (3, H, W))
    assert (decode(hr[2]) == 3 * 8 + 3 + 64).all() and (decode(ref[2]) == 0 + 64).all()
    assert (decode(hr[0]) == np.arange(H)[:, None]).all() and (decode(hr[1]) == np.arange(W)).all()
    torch.testing.assert_close(lr, downscale(hr, 4).clamp(0, 1))


def test_random_crops_parallax_and_flips(store_path):
    ds = LightFieldDataset(store_path, 4, crop=(32, 48), views="diagonal", parallax_shift=15, flips=True, seed=7)
    shifts, flips_seen, lr_views = set(), set(), set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            lr, ref, hr = ds[i]
            assert (lr.shape, ref.shape, hr.shape) == ((3, 8, 12), (3, 32, 48), (3, 32, 48))
            ys, xs = decode(hr[0]), decode(hr[1])
            ry, rx = decode(ref[0]), decode(ref[1])
            # The HR crop is a window of the view, possibly flipped; Ref went through the same flips.
            flip_x, flip_y = xs[0, 0] > xs[0, -1], ys[0, 0] > ys[-1, 0]
            assert (rx[0, 0] > rx[0, -1]) == flip_x and (ry[0, 0] > ry[-1, 0]) == flip_y
            assert (np.abs(np.diff(xs, axis=1)) == 1).all() and (np.abs(np.diff(ys, axis=0)) == 1).all()
            # Ref = the same window shifted by (dx, dy), |d| ≤ 15, exactly (integer shift).
            dx, dy = rx - xs, ry - ys
            assert (dx == dx[0, 0]).all() and (dy == dy[0, 0]).all()
            assert abs(dx[0, 0]) <= 15 and abs(dy[0, 0]) <= 15
            shifts.add((int(dx[0, 0]), int(dy[0, 0])))
            flips_seen.add((bool(flip_x), bool(flip_y)))
            code = decode(hr[2])[0, 0] - 64 * i
            k = code // 8
            assert code == 9 * k and 1 <= k <= 7, "views='diagonal' must give an LR view (k, k), k ≠ 0"
            assert (decode(ref[2]) == 64 * i).all(), "reference must be view (0, 0)"
            lr_views.add(int(k))
            torch.testing.assert_close(lr, downscale(hr, 4).clamp(0, 1))
    assert len(shifts) > 5 and len(flips_seen) == 4 and len(lr_views) > 3
    # Same seed and epoch → same sample; another epoch → (almost surely) another one.
    ds.set_epoch(2)
    a = ds[0]
    b = LightFieldDataset(store_path, 4, crop=(32, 48), views="diagonal", seed=7)
    b.set_epoch(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b[0]))


def test_random_view_pairs(store_path):
    ds = LightFieldDataset(store_path, 2, crop=(16, 16), views="random", ref_view="random",
                           parallax_shift=0, flips=False, seed=0)
    pairs = set()
    for i in range(40):
        ds.set_epoch(i)
        _, ref, hr = ds[0]
        pairs.add((int(decode(ref[2])[0, 0]), int(decode(hr[2])[0, 0])))
    assert all(a != b for a, b in pairs) and len(pairs) > 30


def test_invalid_arguments(store_path):
    with pytest.raises(ValueError, match="multiple of the scale"):
        LightFieldDataset(store_path, 4, crop=(30, 48))
    with pytest.raises(ValueError, match="larger than the views"):
        LightFieldDataset(store_path, 4, crop=(128, 48))
    with pytest.raises(ValueError, match="outside"):
        LightFieldDataset(store_path, 4, views=(8, 8))
    with pytest.raises(ValueError, match="both"):
        LightFieldDataset(store_path, 4, views=0)


def test_dataloader_workers_open_their_own_handles(store_path):
    ds = LightFieldDataset(store_path, 4, crop=(32, 32), views=(7, 7), seed=1)
    assert ds.store._h5 is None
    ds[0]  # the main process opens a handle; forked workers must not reuse it
    loader = DataLoader(ds, batch_size=3, num_workers=2, multiprocessing_context="fork")
    lr, ref, hr = next(iter(loader))
    assert (lr.shape, ref.shape, hr.shape) == ((3, 3, 8, 8), (3, 3, 32, 32), (3, 3, 32, 32))
    torch.testing.assert_close(hr[0], ds[0][2])


def test_iter_test_pairs_top_left_crop(store_path):
    pairs = list(iter_test_pairs(store_path, 8, 5, crop=(60, 90)))
    assert [p[0] for p in pairs] == ["lf0", "lf1", "lf2"]
    name, lr, ref, hr = pairs[2]
    assert (lr.shape, ref.shape, hr.shape) == ((3, 7, 11), (3, 56, 88), (3, 56, 88))
    assert decode(hr[0])[0, 0] == 0 and decode(hr[1])[0, 0] == 0  # top-left
    assert (decode(hr[2]) == (5 * 8 + 5 + 128)).all() and (decode(ref[2]) == 128).all()
    torch.testing.assert_close(lr, downscale(hr, 8).clamp(0, 1))


def test_authors_layout_through_dataset(tmp_path):
    lf = coded_light_field(0)
    path = tmp_path / "train_x4_x8.h5"
    with h5py.File(path, "w") as h5:
        h5["img_HR"] = lf[None].transpose(0, 1, 2, 5, 3, 4)  # [N, 8, 8, 3, H, W]
    ds = LightFieldDataset(path, 4, crop=None, views=(2, 2), parallax_shift=0, flips=False)
    _, ref, hr = ds[0]
    assert (decode(hr[1]) == np.arange(W)).all() and (decode(hr[2]) == 18).all() and (decode(ref[2]) == 0).all()
    name, lr, ref, hr = next(iter_test_pairs(path, 4, 7))
    assert name == "train_x4_x8/00000" and hr.shape == (3, H, W) and (decode(hr[2]) == 63).all()
