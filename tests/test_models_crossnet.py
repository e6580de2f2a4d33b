"""CrossNet, CrossNet++, MDSR, shared blocks, warping, checkpoints, CrossNet losses and ``refsr models``.

Every model test uses the registry's ``tiny`` config (same architecture, 1/16 width), so the suite runs
on a loaded 2-core CPU in well under a minute and a half.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from skimage import data

from refsr_cli.archs import build_model, count_parameters, spec
from refsr_cli.archs.blocks import ResBlock, Upsampler, conv, deconv
from refsr_cli.archs.flownet import FlowNetSPlus
from refsr_cli.archs.checkpoint import load_model, read_checkpoint, save_checkpoint
from refsr_cli.data.landmarks import LandmarkCache
from refsr_cli.ops.features import crop_matches, landmark_matches
from refsr_cli.training.losses.flow import landmark_loss
from refsr_cli.training.losses.pixel import charbonnier, warping_loss
from refsr_cli.ops.resize import downscale, upscale
from refsr_cli.ops.warp import backward_warp

torch.set_num_threads(1)     # the test machine is shared; one thread is the fair share

REF_VARIANTS = ("crossnet", "crossnetpp")


def tiny(name: str, **extra):
    torch.manual_seed(0)
    return build_model(name, **{**spec(name).tiny, **extra})


def _image(name: str = "astronaut") -> torch.Tensor:
    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255.0


# ------------------------------------------------------------------ blocks
def test_blocks_shapes():
    x = torch.rand(2, 8, 12, 20)
    assert conv(8, 5, 5, stride=2, act="selu")(x).shape == (2, 5, 6, 10)
    assert conv(8, 8, 3, dilation=4)(x).shape == x.shape
    assert deconv(8, 4)(x).shape == (2, 4, 24, 40)
    assert ResBlock(8, 5)(x).shape == x.shape
    assert Upsampler(8, 8)(x).shape == (2, 8, 96, 160)
    assert Upsampler(3, 8)(x).shape == (2, 8, 36, 60)


def test_resblock_is_identity_when_residual_is_zero():
    block = ResBlock(4)
    for p in block.body[-1].parameters():
        torch.nn.init.zeros_(p)
    x = torch.randn(1, 4, 7, 9)
    assert torch.equal(block(x), x)


# ------------------------------------------------------------------ warping
def test_warp_integer_flow_is_a_shift():
    torch.manual_seed(0)
    img = torch.rand(1, 3, 20, 30)
    flow = torch.zeros(1, 2, 20, 30)
    flow[:, 0], flow[:, 1] = 3.0, -2.0             # out(x, y) = in(x + 3, y − 2)
    out = backward_warp(img, flow)
    # Interior (where x + 3 and y − 2 stay inside) equals the shifted image exactly.
    assert torch.allclose(out[:, :, 2:, :27], img[:, :, :18, 3:], atol=1e-6)
    # Borders are clamped: the last 3 columns repeat the last input column.
    assert torch.allclose(out[:, :, 2:, 27:], img[:, :, :18, 29:30].expand(-1, -1, -1, 3), atol=1e-6)


def test_warp_subpixel_flow_is_bilinear():
    torch.manual_seed(1)
    img = torch.rand(1, 2, 16, 16)
    flow = torch.rand(1, 2, 16, 16) * 4 - 2        # different sub-pixel flow at every pixel
    out = backward_warp(img, flow)
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    x = (xs + flow[0, 0]).clamp(0, 15)
    y = (ys + flow[0, 1]).clamp(0, 15)
    x0, y0 = x.floor().long().clamp(max=14), y.floor().long().clamp(max=14)
    ax, ay = x - x0, y - y0
    ref = (img[0][:, y0, x0] * (1 - ax) * (1 - ay) + img[0][:, y0, x0 + 1] * ax * (1 - ay)
           + img[0][:, y0 + 1, x0] * (1 - ax) * ay + img[0][:, y0 + 1, x0 + 1] * ax * ay)
    assert torch.allclose(out[0], ref, atol=1e-5)


# ------------------------------------------------------------------ shapes and interface
@pytest.mark.parametrize("name", REF_VARIANTS)
@pytest.mark.parametrize("h,w,scale", [(16, 16, 4), (17, 23, 4), (8, 13, 8)])
def test_refsr_shapes_any_size(name, h, w, scale):
    model = tiny(name).eval()
    lr, ref = torch.rand(2, 3, h, w), torch.rand(2, 3, scale * h, scale * w)
    with torch.no_grad():
        sr, aux = model(lr, ref, scale)
    H, W = scale * h, scale * w
    assert sr.shape == (2, 3, H, W)
    assert aux["flow"].shape == (2, 2, H, W)
    assert aux["warped"].shape == (2, 3, H, W)
    assert [tuple(v.shape[-2:]) for v in aux["flows"]] == [(-(-H // 2 ** i), -(-W // 2 ** i)) for i in range(4)]
    assert torch.equal(aux["flows"][0], aux["flow"])
    if name == "crossnetpp":
        assert aux["flow_stage1"].shape == (2, 2, H, W) and aux["warped_stage1"].shape == (2, 3, H, W)
    assert torch.isfinite(sr).all()


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_mdsr_shapes_and_ignores_ref(scale):
    model = tiny("mdsr").eval()
    lr = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        sr, aux = model(lr, None, scale)
        sr2, _ = model(lr, torch.rand(1, 3, 9 * scale, 11 * scale), scale)
    assert sr.shape == (1, 3, 9 * scale, 11 * scale) and aux == {}
    assert torch.equal(sr, sr2)


def test_mdsr_rejects_unknown_scale():
    with pytest.raises(ValueError, match="×5"):
        tiny("mdsr")(torch.rand(1, 3, 8, 8), None, 5)


def test_reference_size_is_checked():
    with pytest.raises(ValueError, match="does not match"):
        tiny("crossnet")(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 60, 64), 4)


def test_flownet_needs_multiples_of_64():
    with pytest.raises(ValueError, match="multiples of 64"):
        FlowNetSPlus(0.0625)(torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96))


def test_channels_last_matches_contiguous():
    model = tiny("crossnetpp").eval()
    torch.manual_seed(4)
    lr, ref = torch.rand(1, 3, 16, 20), torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        a, _ = model(lr, ref, 4)
        model = model.to(memory_format=torch.channels_last)
        b, _ = model(lr.contiguous(memory_format=torch.channels_last),
                     ref.contiguous(memory_format=torch.channels_last), 4)
    assert torch.allclose(a, b, atol=1e-4)


def test_global_residual_option():
    """Without the residual, SR is the decoder output alone; with it, SR − LR↑ is that same output."""
    torch.manual_seed(5)
    lr, ref = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 64, 64)
    on, off = tiny("crossnet", global_residual=True).eval(), tiny("crossnet", global_residual=False).eval()
    off.load_state_dict(on.state_dict())
    with torch.no_grad():
        sr_on, aux = on(lr, ref, 4)
        sr_off, _ = off(lr, ref, 4)
    assert torch.allclose(sr_on - aux["lr_up"], sr_off, atol=1e-5)
    assert torch.allclose(aux["lr_up"], upscale(lr, 4), atol=1e-6)


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("name,extra", [("crossnet", {}), ("crossnetpp", {}), ("mdsr", {}),
                                        ("crossnet", {"sisr": "mdsr", "sisr_config": {
                                            "n_resblocks": 1, "features": 8, "scales": [4, 8]}})])
def test_gradients_reach_every_parameter(name, extra):
    """Every parameter gets a non-zero gradient from the SR loss (for multi-scale MDSR: summed over its
    scales, since a forward pass uses only one scale's head and tail)."""
    model = tiny(name, **extra).train()
    torch.manual_seed(6)
    lr = torch.rand(1, 3, 8, 8)
    scales = model.config["scales"] if name == "mdsr" else [4, 8] if extra else [4]
    loss = 0.0
    for s in scales:
        sr, _ = model(lr, torch.rand(1, 3, 8 * s, 8 * s), s)
        loss = loss + charbonnier(sr, torch.rand_like(sr))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


# ------------------------------------------------------------------ paper sizes
def test_paper_size_parameter_counts():
    with torch.device("meta"):
        counts = {"crossnet": count_parameters(build_model("crossnet")),
                  "crossnetpp": count_parameters(build_model("crossnetpp")),
                  "mdsr": count_parameters(build_model("mdsr", scales=[2, 3, 4])),
                  "mdsr8": count_parameters(build_model("mdsr")),
                  "flownet": count_parameters(FlowNetSPlus())}
    assert abs(counts["crossnet"] / 35.2e6 - 1) < 0.02
    assert abs(counts["crossnetpp"] / 69.0e6 - 1) < 0.02
    assert abs(counts["mdsr"] / 7.95e6 - 1) < 0.02
    assert abs(counts["flownet"] / 33.8e6 - 1) < 0.01
    assert counts["mdsr8"] - counts["mdsr"] == 852_992


# ------------------------------------------------------------------ overfitting
def test_small_crossnet_overfits_one_pair():
    """Paper configuration (no global residual), tiny width: the Charbonnier loss on one pair cut from a
    photo, with the reference shifted by (4, 3) px, falls ≥ 10× and below the bicubic baseline's loss."""
    img = _image("astronaut")
    hr = img[:, 100:164, 180:244][None].contiguous()
    ref = img[:, 103:167, 184:248][None].contiguous()
    lr = downscale(hr, 4)
    bicubic = charbonnier(upscale(lr, 4), hr).item()
    model = tiny("crossnet", global_residual=False).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first, loss, steps = None, None, 0
    for steps in range(1, 401):
        sr, _ = model(lr, ref, 4)
        loss = charbonnier(sr, hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        if loss.item() < first / 10 and loss.item() < bicubic:
            break
    # How long this takes is measured by benchmarks/bench_overfit.py, not asserted here.
    assert loss.item() < first / 10, (first, loss.item(), steps)
    assert loss.item() < bicubic, (bicubic, loss.item(), steps)


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip(tmp_path):
    model = tiny("crossnet", global_residual=False, sisr="mdsr",
                 sisr_config={"n_resblocks": 1, "features": 8, "scales": [4]}).eval()
    path = save_checkpoint(tmp_path / "net.pt", model, scale=4, meta={"iterations": 3})
    raw = torch.load(path, weights_only=True)                   # plain data, no code
    assert raw["variant"] == "crossnet" and raw["config"]["sisr_config"]["scales"] == [4]
    loaded, payload = load_model(path)                           # no variant named by the user
    assert type(loaded) is type(model) and loaded.config == model.config
    assert payload["scale"] == 4 and payload["meta"]["iterations"] == 3
    torch.manual_seed(7)
    lr, ref = torch.rand(1, 3, 12, 20), torch.rand(1, 3, 48, 80)
    with torch.no_grad():
        a, aux_a = model(lr, ref, 4)
        b, aux_b = loaded(lr, ref, 4)
    assert torch.equal(a, b) and torch.equal(aux_a["flow"], aux_b["flow"])


@pytest.mark.parametrize("name", ["crossnetpp", "mdsr"])
def test_checkpoint_round_trip_other_variants(tmp_path, name):
    model = tiny(name).eval()
    path = save_checkpoint(tmp_path / f"{name}.pt", model, scale=8)
    loaded, _ = load_model(path)
    assert read_checkpoint(path)["variant"] == name
    lr, ref = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(lr, ref, 8)[0], loaded(lr, ref, 8)[0])


# ------------------------------------------------------------------ losses
def test_charbonnier_and_warping_loss_values():
    a, b = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    assert charbonnier(a, a).item() == pytest.approx(1e-3)
    assert charbonnier(a, b).item() == pytest.approx((0.25 + 1e-6) ** 0.5, rel=1e-6)
    assert warping_loss(a, b).item() == pytest.approx(0.5 * 0.25)


def _shifted_pair(dx: int = 5, dy: int = 3):
    img = data.camera()
    hr = img[100:228, 150:310]
    ref = img[100 + dy:228 + dy, 150 + dx:310 + dx]     # ref(p) = hr(p + (dx, dy)) → q = p − (dx, dy)
    return hr, ref


def test_landmark_matches_find_the_shift():
    hr, ref = _shifted_pair()
    p, q = landmark_matches(hr, ref, ratio=0.3)
    assert p.shape == q.shape and p.shape[1] == 2 and len(p) >= 10
    d = q - p
    assert np.allclose(np.median(d, axis=0), [-5, -3], atol=0.5)
    assert (np.abs(d - [-5, -3]) <= 1.5).mean() > 0.9


def test_landmark_matches_flat_image_gives_none():
    p, q = landmark_matches(np.zeros((64, 64)), np.zeros((64, 64)))
    assert p.shape == (0, 2) and q.shape == (0, 2)


def test_landmark_loss_zero_at_true_flow_and_differentiable():
    hr, ref = _shifted_pair()
    p, q = landmark_matches(hr, ref)
    h, w = hr.shape
    true = torch.zeros(1, 2, h, w)
    true[:, 0], true[:, 1] = -5.0, -3.0
    zero = torch.zeros(1, 2, h, w, requires_grad=True)
    at_true = landmark_loss(true, p, q).item()
    at_zero = landmark_loss(zero, p, q)
    assert at_zero.item() > 20 and at_true < 0.05 * at_zero.item()
    at_zero.backward()
    # The gradient pushes the flow towards the true shift (negative x and y) at the matched points.
    gx, gy = zero.grad[0, 0].sum().item(), zero.grad[0, 1].sum().item()
    assert gx > 0 and gy > 0
    # Batch form with different numbers of matches (one sample without any).
    batch = torch.cat([true, true])
    assert landmark_loss(batch, [p, p[:0]], [q, q[:0]]).item() == pytest.approx(at_true, rel=1e-5)
    assert landmark_loss(zero.detach(), p[:0], q[:0]).item() == 0.0


def test_landmark_cache_computes_once_and_persists(tmp_path):
    hr, ref = _shifted_pair()
    cache = LandmarkCache(tmp_path / "landmarks.npz")
    p1, q1 = cache.get(("lf", 3), hr, ref)
    p2, q2 = cache.get(("lf", 3), np.zeros_like(hr), np.zeros_like(ref))   # not recomputed
    assert cache.computed == 1 and p1 is p2 and q1 is q2
    cache.save()
    again = LandmarkCache(tmp_path / "landmarks.npz")
    assert ("lf", 3) in again and len(again) == 1
    p3, q3 = again.get(("lf", 3), None, None)
    assert again.computed == 0 and np.array_equal(p1, p3) and np.array_equal(q1, q3)


def test_crop_matches():
    p = np.array([[10.0, 10.0], [2.0, 3.0]], np.float32)
    q = np.array([[5.0, 7.0], [0.0, 0.0]], np.float32)
    pc, qc = crop_matches(p, q, hr_offset=(4, 4), ref_offset=(1, 1), size=(16, 16))
    assert np.array_equal(pc, [[6.0, 6.0]]) and np.array_equal(qc, [[4.0, 6.0]])


def test_crossnetpp_losses_on_model_outputs():
    model = tiny("crossnetpp").train()
    hr_np, ref_np = _shifted_pair()
    hr = torch.from_numpy(np.stack([hr_np] * 3)).float()[None] / 255
    ref = torch.from_numpy(np.stack([ref_np] * 3)).float()[None] / 255
    p, q = landmark_matches(hr, ref)
    sr, aux = model(downscale(hr, 4), ref, 4)
    loss = charbonnier(sr, hr) + warping_loss(aux["warped_stage1"], hr) + 1e-3 * landmark_loss(
        aux["flow_stage1"], p, q)
    loss.backward()
    assert model.flownet1.head0.weight.grad.abs().sum() > 0


def test_warping_term_applies_to_crossnet_v0_warp():
    """``[loss] warping`` in a CrossNet recipe trains V0 through ½·MSE(warp(Ref, V0), HR)."""
    from refsr_cli.training.losses.terms import compute_loss

    model = tiny("crossnet").train()
    hr_np, ref_np = _shifted_pair()
    hr = torch.from_numpy(np.stack([hr_np] * 3)).float()[None] / 255
    ref = torch.from_numpy(np.stack([ref_np] * 3)).float()[None] / 255
    sr, aux = model(downscale(hr, 4), ref, 4)
    total, terms = compute_loss("crossnet", {"charbonnier": 0.0, "warping": 1.0}, sr, aux, {"hr": hr})
    assert set(terms) == {"warping"}
    assert terms["warping"] == pytest.approx(warping_loss(aux["warped"], hr).item())
    total.backward()
    assert model.flownet.head0.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ refsr models
def test_models_command_json_and_table():
    from refsr_cli.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    by_name = {r["name"]: r for r in rows}
    assert {"crossnet", "crossnetpp", "mdsr"} <= set(by_name)
    assert all(isinstance(r["params"], int) and r["params"] > 0 for r in rows)
    assert by_name["crossnet"]["params"] == 35_598_561
    assert by_name["mdsr"]["needs_reference"] is False
    table = runner.invoke(main, ["models"])
    assert table.exit_code == 0 and "crossnetpp" in table.output and "69.01 M" in table.output


def test_flow_scale_multiplies_every_flownet_output():
    """FlowNet's div_flow: heads predict flow / flow_scale, outputs are in pixels either way."""
    torch.manual_seed(0)
    plain = FlowNetSPlus(width=1 / 16)
    scaled = FlowNetSPlus(width=1 / 16, flow_scale=20.0)
    scaled.load_state_dict(plain.state_dict())
    a, b = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    for v1, v20 in zip(plain(a, b, levels=4), scaled(a, b, levels=4)):
        assert torch.allclose(v1 * 20.0, v20, atol=1e-5)
    model = build_model("crossnet", width=1 / 16, features=8, flow_scale=20.0)
    assert model.config["flow_scale"] == 20.0 and model.flownet.flow_scale == 20.0
