"""Ground-truth flow from synthetic light fields: per-view disparity in the renderer and the store, the
true flow of training samples, and the supervised ``flow`` loss of CrossNet / CrossNet++."""
from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from refsr_cli.cli import main
from refsr_cli.errors import RefsrError
from refsr_cli.training.losses.flow import flow_loss
from refsr_cli.data.store import open_store
from refsr_cli.prepare.synthetic import render_light_field
from refsr_cli.ops.warp import backward_warp


def _psnr(a: torch.Tensor, b: torch.Tensor, border: int = 6) -> float:
    err = (a - b)[..., border:-border, border:-border].square().mean()
    return float(-10 * torch.log10(err))


def _image(view: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(view).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def disparity_store(tmp_path_factory):
    from refsr_cli.prepare.pipeline import prepare_synthetic

    out = tmp_path_factory.mktemp("disparity-store")
    prepare_synthetic(out, count=2, test_count=1, seed=4, height=64, width=96, max_disparity=8.0, jobs=1,
                      disparity=True)
    return out


def test_per_view_disparity_warps_the_reference_onto_each_view():
    views, per_view = render_light_field(5, height=96, width=128, max_disparity=12.0, return_disparity="views")
    same_views, disp00 = render_light_field(5, height=96, width=128, max_disparity=12.0, return_disparity=True)
    assert per_view.shape == (8, 8, 96, 128) and per_view.dtype == np.float32
    assert np.array_equal(views, same_views)                 # asking for disparity changes no pixel
    assert np.allclose(per_view[0, 0], disp00, atol=1e-4)    # view (0,0): the existing map
    ref = _image(views[0, 0])
    height, width = disp00.shape
    ys, xs = np.mgrid[0:height, 0:width]
    for r, c in ((1, 1), (4, 4), (0, 7), (6, 2)):
        target = _image(views[r, c])
        flow = torch.from_numpy(np.stack((per_view[r, c] * c / 7, per_view[r, c] * r / 7)))[None]
        assert _psnr(backward_warp(ref, flow), target) > _psnr(ref, target) + 3, (r, c)
        # Independent check: splat view (0,0)'s disparity forward into view (r,c), nearest surface winning.
        ty, tx = np.round(ys - disp00 * r / 7).astype(int), np.round(xs - disp00 * c / 7).astype(int)
        inside = (ty >= 0) & (ty < height) & (tx >= 0) & (tx < width)
        order = np.argsort(disp00[inside], kind="stable")
        splat = np.full((height, width), np.nan)
        splat[ty[inside][order], tx[inside][order]] = disp00[inside][order]
        seen = ~np.isnan(splat)
        error = np.abs(splat - per_view[r, c])[seen]
        assert np.median(error) < 0.05 and (error > 0.5).mean() < 0.05, (r, c)


def test_prepare_disparity_writes_a_compressed_float16_dataset(disparity_store, tiny_lf_store):
    store = open_store(disparity_store / "train.h5")
    assert store.has_disparity
    d = store.disparity(1, 3, 5)
    assert d.shape == (64, 96) and d.dtype == np.float32 and 0 <= d.min() and d.max() <= 8.0
    with h5py.File(disparity_store / "train.h5") as h5:
        ds = h5["disparity"]
        assert ds.dtype == np.float16 and ds.shape == (2, 8, 8, 64, 96) and ds.chunks == (1, 1, 1, 64, 96)
    # The stored maps are the renderer's (float16-rounded) and the views are unchanged by the option.
    from refsr_cli.prepare.pipeline import synthetic_seed

    views, per_view = render_light_field(synthetic_seed(4, "train", 1), height=64, width=96, max_disparity=8.0,
                                         return_disparity="views")
    assert np.abs(d - per_view[3, 5]).max() < 8.0 / 1024
    assert np.array_equal(store.view(1, 3, 5), views[3, 5])
    plain = open_store(tiny_lf_store / "train.h5")
    assert not plain.has_disparity
    with pytest.raises(RefsrError, match="--disparity"):
        plain.disparity(0, 1, 1)


def test_prepare_synthetic_disparity_from_the_command_line(tmp_path):
    out = tmp_path / "syn"
    args = ["--quiet", "prepare", "synthetic", "--out", str(out), "--count", "1", "--test-count", "1",
            "--size", "32", "48", "--max-disparity", "4", "--disparity"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    for split in ("train", "test"):
        store = open_store(out / f"{split}.h5")
        assert store.has_disparity and store.disparity(0, 7, 7).shape == (32, 48)
    # The same command again finds the stores already prepared and leaves them as they are.
    assert CliRunner().invoke(main, args).exit_code == 0
    assert h5py.File(out / "train.h5")["disparity"].shape == (1, 8, 8, 32, 48)


def test_disparity_option_is_synthetic_only(tmp_path):
    (tmp_path / "src").mkdir()
    result = CliRunner().invoke(main, ["prepare", "flower", str(tmp_path / "src"), "--out", str(tmp_path / "o"),
                                       "--disparity"])
    assert result.exit_code != 0 and "--disparity applies to 'prepare synthetic' only" in result.output


def test_training_samples_carry_the_true_flow_through_shift_and_flips(disparity_store):
    from refsr_cli.data.training_samples import collate, open_training_data

    data = open_training_data([str(disparity_store)], scale=4, crop=(48, 64), views="random", ref_view=(0, 0),
                              parallax_shift=6, flips=True, seed=1, flow=True)
    store = data.sources[0].store
    gains, flips = [], set()
    for g in range(16):
        s = data[g]
        # The same draw again, to know the view pair, window, shift and flips of sample g.
        rng = np.random.default_rng([1, 0x5EED, g])
        index = int(rng.integers(len(store)))
        geo = data.sources[0].sample(index, rng)[3]
        (r, c), (r0, c0) = geo["lr_view"], geo["ref_view"]
        flips.add((geo["flip_x"], geo["flip_y"]))
        # Pixel (y, x) of the sample is pixel (ys, xs) of the unflipped window; the flow mirrors with it.
        y, x = np.mgrid[0:48, 0:64]
        ys, xs = (47 - y if geo["flip_y"] else y), (63 - x if geo["flip_x"] else x)
        d = store.disparity(index, r, c)[geo["y0"] + ys, geo["x0"] + xs]
        fx = (d * (c - c0) / 7 - geo["dx"]) * (-1 if geo["flip_x"] else 1)
        fy = (d * (r - r0) / 7 - geo["dy"]) * (-1 if geo["flip_y"] else 1)
        assert torch.allclose(s["flow"], torch.from_numpy(np.stack((fx, fy))).float(), atol=1e-5), g
        ref, hr = s["ref"][None], s["hr"][None]
        gains.append(_psnr(backward_warp(ref, s["flow"][None]), hr) - _psnr(ref, hr))
    assert len(flips) == 4
    assert np.mean(gains) > 3, gains       # and it does align Ref with the HR view
    assert collate([data[0], data[1]])["flow"].shape == (2, 2, 48, 64)


def test_flow_samples_need_a_store_with_disparity(tiny_lf_store):
    from refsr_cli.data.training_samples import open_training_data

    with pytest.raises(RefsrError, match="--disparity"):
        open_training_data([str(tiny_lf_store)], scale=4, crop=(32, 32), views="random", ref_view=(0, 0),
                           parallax_shift=0, flips=False, seed=0, flow=True)


def test_flow_loss_is_zero_for_the_true_flow_at_every_scale_and_counts_hr_pixels():
    target = torch.randn(2, 2, 32, 48)
    pyramid = [target] + [torch.nn.functional.avg_pool2d(target, 2 ** i) / 2 ** i for i in (1, 2, 3)]
    assert float(flow_loss(pyramid, target)) < 1e-2
    # A 1-px error at full resolution and a ½-px error at half resolution are both 1 HR pixel.
    off = [target + torch.tensor([1.0, 0.0])[None, :, None, None],
           pyramid[1] + torch.tensor([0.0, 0.5])[None, :, None, None]]
    assert math.isclose(float(flow_loss(off, target)), 1.0, rel_tol=1e-3)
    flow = torch.zeros(1, 2, 8, 8, requires_grad=True)
    flow_loss([flow], torch.ones(1, 2, 8, 8)).backward()
    assert flow.grad is not None and (flow.grad < 0).all()


@pytest.mark.parametrize("variant,supervised", [("crossnet", "flownet."), ("crossnetpp", "flownet1."),
                                                ("refsrnet", "ccnet.")])
def test_the_flow_loss_trains_exactly_the_flow_network_that_points_at_ref(disparity_store, tmp_path, variant,
                                                                          supervised):
    from refsr_cli.archs import build_model, spec
    from refsr_cli.archs.checkpoint import read_checkpoint

    out = tmp_path / variant
    config = tmp_path / "flow.toml"
    # Only the flow term (CrossNet++'s preset stages would switch it off at first).
    config.write_text('stages = []\nviews = "diagonal"\nlog_every = 2\n'
                      "[loss]\nflow = 1.0\ncharbonnier = 0.0\nwarping = 0.0\nlandmark = 0.0\nl1 = 0.0\nccnet = 0.0\n")
    args = ["--quiet", "train", "--variant", variant, "--data", str(disparity_store), "--out", str(out),
            "--iters", "4", "--model-size", "tiny", "--crop", "64", "64", "--batch", "2", "--scale", "4",
            "--device", "cpu", "--config", str(config), "--seed", "0", "--val-holdout", "0"]  # both light fields
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    flows = [r["flow"] for r in log if "flow" in r]
    assert len(flows) == 2 and all(0 < v < 50 for v in flows)
    torch.manual_seed(0)     # the trainer's initialisation with --seed 0
    initial = build_model(variant, **spec(variant).tiny).state_dict()
    trained = read_checkpoint(out / "model.pt")["state_dict"]
    changed = {k for k in trained if k in initial and not torch.equal(trained[k].float(), initial[k].float())}
    assert changed and all(k.startswith(supervised) for k in changed), sorted(changed)[:5]


def test_flow_loss_on_a_variant_without_flows_is_a_clean_error(disparity_store, tmp_path):
    config = tmp_path / "flow.toml"
    config.write_text("[loss]\nflow = 0.1\n")
    result = CliRunner().invoke(main, ["train", "--variant", "mdsr", "--data", str(disparity_store), "--out",
                                       str(tmp_path / "run"), "--iters", "1", "--config", str(config)])
    assert result.exit_code != 0 and "'flow' loss" in result.output and "Traceback" not in result.output


def test_refsrnet_match_targets_from_the_true_flow_agree_with_the_exhaustive_hr_search(disparity_store):
    """RefSR-Net's ``flow`` term classifies CC-Net's matches against the true flow: the candidate it picks
    must be the one whose Ref window matches the HR window (the ``ccnet`` term's target), and not with the
    flow's sign reversed."""
    from refsr_cli.archs import build_model, spec
    from refsr_cli.training.losses.ccnet import ccnet_pseudo_offsets, ccnet_true_targets
    from refsr_cli.data.training_samples import collate, open_training_data

    data = open_training_data([str(disparity_store)], scale=4, crop=(64, 96), views="diagonal", ref_view=(0, 0),
                              parallax_shift=0, flips=True, seed=3, flow=True)
    batch = collate([data[g] for g in range(8)])
    model = build_model("refsrnet", **{**spec("refsrnet").tiny, "search_step": 1})
    with torch.no_grad():
        _, aux = model(batch["lr"], batch["ref"], 4)
    pseudo = ccnet_pseudo_offsets(aux, batch["hr"], batch["ref"])
    side = int(round(math.sqrt(aux["match_offsets"].shape[0])))

    def agreement(flow):
        index, usable = ccnet_true_targets(aux, flow)
        near = ((index % side - pseudo % side).abs() <= 1) & ((index // side - pseudo // side).abs() <= 1)
        moving = flow[:, :, aux["match_centers"][1], aux["match_centers"][0]].abs().amax(1) >= 2
        return float(near[usable & moving].float().mean()), int((usable & moving).sum())

    right, n = agreement(batch["flow"])
    wrong, _ = agreement(-batch["flow"])
    assert n >= 20 and right >= 0.8 and wrong <= 0.3, (right, wrong, n)
