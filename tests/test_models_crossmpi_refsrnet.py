"""Cross-MPI and RefSR-Net: shapes, gradients, plane-sweep geometry, attention on a known scene, matching
targets, checkpoints and the losses of both (tiny configurations, CPU)."""
import numpy as np
import pytest
import torch
from skimage import data

from refsr_cli.training.losses.ccnet import ccnet_loss, ccnet_pseudo_offsets
from refsr_cli.training.losses.crossmpi import crossmpi_loss
from refsr_cli.training.losses.perceptual import VGGPerceptual
from refsr_cli.archs import build_model, spec
from refsr_cli.archs.crossmpi import degraded_sweep, plane_sweep_volume
from refsr_cli.archs.checkpoint import load_model, save_checkpoint
from refsr_cli.errors import RefsrError
from refsr_cli.ops.resize import downscale

torch.set_num_threads(1)


def _tiny(name, **over):
    torch.manual_seed(0)
    return build_model(name, **{**spec(name).tiny, **over})


def _texture(name="astronaut"):
    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return torch.from_numpy(img[..., :3].astype(np.float32) / 255).permute(2, 0, 1)


def _scene(src, size, dx, dy, y0=40, x0=60):
    """Fronto-parallel pair: ``hr(p) = ref(p + (dx, dy))`` exactly (integer shifts of one texture)."""
    ref = src[:, y0:y0 + size[0], x0:x0 + size[1]]
    hr = src[:, y0 + dy:y0 + dy + size[0], x0 + dx:x0 + dx + size[1]]
    return ref[None].contiguous(), hr[None].contiguous()


@pytest.mark.parametrize("name", ["crossmpi", "refsrnet"])
@pytest.mark.parametrize("h, w, scale", [(13, 21, 8), (10, 17, 4), (3, 5, 4)])
def test_shapes_any_size(name, h, w, scale):
    model = _tiny(name).eval()
    lr, ref = torch.rand(2, 3, h, w), torch.rand(2, 3, scale * h, scale * w)
    with torch.no_grad():
        sr, aux = model(lr, ref, scale)
    H, W = scale * h, scale * w
    assert sr.shape == (2, 3, H, W) and torch.isfinite(sr).all()
    if name == "crossmpi":
        d = model.config["num_planes"]
        assert aux["alpha"].shape == (2, d, H, W) and aux["alpha_lr"].shape == (2, d, h, w)
        torch.testing.assert_close(aux["alpha"].sum(1), torch.ones(2, H, W))
        assert aux["depth"].shape == (2, 1, H, W) and aux["transferred"].shape == (2, 3, H, W)
        assert aux["lr_synth"].shape == (2, 3, h, w) and aux["psv"].shape == (2, d, 3, H, W)
        assert torch.isin(aux["depth"], aux["disparities"][0]).all()
    else:
        assert aux["confidence"].shape == (2, 1, H, W) and aux["warped"].shape == (2, 3, H, W)
        assert ((aux["confidence"] > 0) & (aux["confidence"] <= 1)).all()
        k = aux["match_offsets"].shape[0]
        assert aux["match_logits"].shape[:2] == (2, k)


def test_plane_sweep_geometry():
    """Plane i at integer disparity d along b equals Ref moved by d·b (docs/architecture.md convention)."""
    src = _texture("coffee")
    ref, hr = _scene(src, (40, 48), dx=6, dy=0)
    psv = plane_sweep_volume(ref, [0.0, 3.0, 6.0], baseline=(1.0, 0.0))
    assert psv.shape == (1, 3, 3, 40, 48)
    torch.testing.assert_close(psv[:, 0], ref)
    torch.testing.assert_close(psv[0, 2, :, :, :-6], hr[0, :, :, :-6])   # right border is clamped
    ref, hr = _scene(src, (40, 48), dx=4, dy=4)
    psv = plane_sweep_volume(ref, torch.tensor([[2.0, 4.0]]), baseline=torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(psv[0, 1, :, :-4, :-4], hr[0, :, :-4, :-4])


def test_plane_sweep_samples_as_the_backward_warp():
    """Each plane is the bilinear backward warp of Ref by its constant shift, borders clamped — fractional
    shifts along both axes, and shifts past the border."""
    from refsr_cli.ops.warp import shift

    ref = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(1))
    disp = torch.tensor([-31.5, -2.25, 0.0, 0.75, 3.0, 40.2])
    for bx, by in ((1.0, 0.0), (0.6, -1.0), (0.0, 1.0)):
        psv = plane_sweep_volume(ref, disp, (bx, by))
        for i, d in enumerate(disp.tolist()):
            torch.testing.assert_close(psv[:, i], shift(ref, d * bx, d * by), atol=1e-4, rtol=0)


def test_degraded_sweep_is_the_downscaled_sweep():
    """Cross-MPI's LR planes: a sweep along rows takes the row resize once on Ref (the two commute), any
    other sweep downscales every plane; both are the downscaled plane sweep volume."""
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(2, 3, 32, 48, generator=g)
    disp = torch.tensor([[-2.0, -0.5, 0.0, 1.25, 9.0], [0.5, 1.0, 2.0, 3.0, 4.0]])
    for baseline in (torch.tensor([[1.0, 0.0], [0.5, 0.0]]), torch.tensor([[1.0, 1.0], [0.0, -1.0]])):
        psv = plane_sweep_volume(ref, disp, baseline)
        torch.testing.assert_close(degraded_sweep(psv, ref, disp, baseline, 4), downscale(psv, 4),
                                   atol=1e-5, rtol=0)


def _all_grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
            or p.grad.abs().sum() == 0}


def test_gradients_reach_every_parameter():
    lr, ref, hr = torch.rand(2, 3, 6, 7), torch.rand(2, 3, 48, 56), torch.rand(2, 3, 48, 56)
    model = _tiny("crossmpi").train()
    # The refiners' and FuseNet's last convs start at zero (identity refinement); move off zero so every weight upstream
    # of them also receives gradient, as it does after the first optimiser step.
    for last in [r.tail for r in model.refiners] + [model.fuse[-1]]:
        torch.nn.init.normal_(last.weight, std=1e-2)
    sr, aux = model(lr, ref, 8)
    assert _all_grads(model, crossmpi_loss(sr, hr, aux, lr)) == set()
    sr, aux = model(lr[..., :6, :6], ref[..., :24, :24], 4)
    unused = _all_grads(model, crossmpi_loss(sr, hr[..., :24, :24], aux, lr[..., :6, :6]))
    assert unused == {n for n, _ in model.named_parameters() if n.startswith(("refiners.2.", "guide_down.1."))}

    model = _tiny("refsrnet").train()
    sr, aux = model(lr, ref, 8)
    loss = (sr - hr).abs().mean() + ccnet_loss(aux, hr=hr)
    assert _all_grads(model, loss) == set()


def test_crossmpi_attention_peaks_at_true_plane():
    """Fronto-parallel scene at disparity 10 (plane 5 of 0, 2, …, 14). A short fit on other textures and
    disparities — internal supervision first, then the full loss, as train.py's schedule does — and the
    plane-aware attention peaks at the true plane on a held-out texture; the wrong baseline sign does not."""
    torch.manual_seed(0)
    model = _tiny("crossmpi", min_disparity=0.0, max_disparity=14.0)
    disparities = [0, 2, 4, 6, 8, 10, 12, 14]
    train_srcs = [_texture(n) for n in ("astronaut", "chelsea")]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    ref_t, hr_t = _scene(_texture("coffee"), (64, 96), 10, 10, y0=100, x0=150)
    lr_t = downscale(hr_t, 4)
    inner_lr = (slice(None), slice(3, -5), slice(3, -5))              # away from clamped borders
    inner = (slice(None), slice(12, -20), slice(12, -20))

    def fit(steps, full):
        for it in range(steps):
            pairs = [_scene(train_srcs[it % 2], (48, 48), d, d,
                            y0=int(torch.randint(0, 150, (1,), generator=g)),
                            x0=int(torch.randint(0, 150, (1,), generator=g)))
                     for d in (disparities[it % 8], disparities[(3 * it + 1) % 8])]
            ref, hr = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
            lr = downscale(hr, 4)
            model.train()
            sr, aux = model(lr, ref, 4)
            terms = crossmpi_loss(sr, hr, aux, lr, return_terms=True)
            loss = terms["l1"] + 0.2 * terms["internal"] if full else terms["internal"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            return model(lr_t, ref_t, 4)[1]

    aux = fit(6, full=False)
    assert (aux["alpha_lr"].argmax(1)[inner_lr] == 5).float().mean() > 0.8
    assert (aux["alpha"].argmax(1)[inner] == 5).float().mean() > 0.8     # guided upsampling keeps alignment
    assert (aux["depth"][:, 0][inner] == 10).float().mean() > 0.8
    aux = fit(6, full=True)
    assert (aux["alpha_lr"].argmax(1)[inner_lr] == 5).float().mean() > 0.8
    with torch.no_grad():
        _, flipped = model(lr_t, ref_t, 4, baseline=(-1.0, -1.0))    # wrong direction: no plane matches
    assert (flipped["alpha_lr"].argmax(1)[inner_lr] == 5).float().mean() < 0.5


def test_ccnet_targets_and_loss():
    """Known shift (dx, dy) = (4, 6): the SSD targets from HR recover it, explicit flow targets agree, and a
    few CC-Net steps on the classification loss lower it."""
    src = _texture("astronaut")
    ref, hr = _scene(src, (64, 64), dx=4, dy=6, y0=150, x0=180)
    lr = downscale(hr, 4)
    model = _tiny("refsrnet").train()
    _, aux = model(lr, ref, 4)
    index = ccnet_pseudo_offsets(aux, hr, ref)                  # N×Gy×Gx
    found = aux["match_offsets"][index]                                # N×Gy×Gx×2
    assert (found[0, 1:-1, 1:-1] == torch.tensor([4, 6])).all()
    flow = torch.zeros(1, 2, 64, 64)
    flow[:, 0], flow[:, 1] = 4.0, 6.0
    assert torch.allclose(ccnet_loss(aux, flow), ccnet_loss(aux, hr=hr))
    opt = torch.optim.Adam(model.ccnet.parameters(), lr=3e-3)
    first = None
    for _ in range(6):
        _, aux = model(lr, ref, 4)
        loss = ccnet_loss(aux, flow)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first
    assert torch.isfinite(ccnet_loss(aux)).all()                 # self-supervised fallback


@pytest.mark.parametrize("radius, step, centres", [(6, 2, ([8, 12, 20, 24, 29], [8, 16, 24, 33])),
                                                    (5, 1, ([6, 14, 22, 27], [6, 14, 30]))])
def test_ccnet_logits_are_the_inner_products_at_each_candidate(radius, step, centres):
    """The block-wise matrix products give, for every centre and offset, ⟨F_LR(c), F_Ref(c + o)⟩ / √C, and
    the invalid logit for a candidate outside Ref — with step-2 offsets, centres off the step lattice (29,
    33, 27) and odd-sized images."""
    from refsr_cli.archs.refsrnet import INVALID_LOGIT

    model = _tiny("refsrnet", search_radius=radius, search_step=step).eval()
    torch.manual_seed(1)
    lr_up, ref = torch.rand(1, 3, 37, 41), torch.rand(1, 3, 37, 41)
    cy, cx = (torch.tensor(c) for c in centres)
    with torch.no_grad():
        logits, valid = model.match(lr_up, ref, cy, cx)
        feats = model.ccnet(torch.cat((lr_up, ref)))
    f_lr, f_ref = feats[0], feats[1]
    c = feats.shape[1]
    for k, (ox, oy) in enumerate(model.offsets.tolist()):
        for i, y in enumerate(cy.tolist()):
            for j, x in enumerate(cx.tolist()):
                inside = 0 <= y + oy < 37 and 0 <= x + ox < 41
                want = float(f_lr[:, y, x] @ f_ref[:, y + oy, x + ox]) / c ** 0.5 if inside else INVALID_LOGIT
                assert bool(valid[k, i, j]) == inside
                assert float(logits[0, k, i, j]) == pytest.approx(want, abs=1e-4)


def test_refsrnet_output_does_not_depend_on_how_patches_are_chunked(monkeypatch):
    """SS-Net runs on chunks of patches sized to the CPU's caches: one patch a chunk, the cache-sized chunks
    and all patches at once give the same output."""
    import refsr_cli.archs.refsrnet as refsrnet

    model = _tiny("refsrnet").eval()
    torch.manual_seed(2)
    lr, ref = torch.rand(1, 3, 13, 19), torch.rand(1, 3, 52, 76)
    outputs = []
    for budget in (1, refsrnet.SSNET_CHUNK_BYTES, 1 << 40):
        monkeypatch.setattr(refsrnet, "SSNET_CHUNK_BYTES", budget)
        with torch.no_grad():
            outputs.append(model(lr, ref, 4)[0])
    assert torch.allclose(outputs[0], outputs[2], atol=1e-6) and torch.allclose(outputs[1], outputs[2], atol=1e-6)


def test_widening_fusenet_keeps_the_function_and_leaves_the_new_weights_trainable():
    """weights/widen_fusenet.py: a wider, deeper FuseNet computes what the original did, and training
    reaches the new weights."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "weights" / "widen_fusenet.py"
    module_spec = importlib.util.spec_from_file_location("widen_fusenet", path)
    widen_fusenet = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(widen_fusenet)
    model = _tiny("crossmpi").eval()
    with torch.no_grad():                      # a trained-looking FuseNet: nonzero output layer
        model.fuse[-1].weight.normal_(0, 0.1)
    c0, b0 = model.config["fuse_channels"], model.config["fuse_blocks"]
    wide = widen_fusenet.widen(model, 2 * c0, b0 + 2)
    assert wide.config["fuse_channels"] == 2 * c0 and wide.config["fuse_blocks"] == b0 + 2
    torch.manual_seed(3)
    lr, ref = torch.rand(1, 3, 12, 16), torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        assert torch.allclose(model(lr, ref, 4)[0], wide(lr, ref, 4)[0], atol=1e-6)
    wide(lr, ref, 4)[0].square().mean().backward()
    last = wide.fuse[-1].weight.grad
    assert float(last[:, c0:].abs().sum()) > 0        # the new channels get a gradient


@pytest.mark.parametrize("name", ["crossmpi", "refsrnet"])
def test_checkpoint_round_trip(tmp_path, name):
    model = _tiny(name)
    # Make BN statistics non-trivial so the round trip must carry buffers too.
    model.train()
    with torch.no_grad():
        model(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 32, 32), 4)
    model.eval()
    lr, ref = torch.rand(1, 3, 9, 11), torch.rand(1, 3, 36, 44)
    with torch.no_grad():
        expected, _ = model(lr, ref, 4)
    path = save_checkpoint(tmp_path / "m.pt", model, 4)
    loaded, payload = load_model(path)
    assert payload["variant"] == name
    with torch.no_grad():
        got, _ = loaded(lr, ref, 4)
    assert torch.equal(got, expected)


def _vgg_state(tmp_path, shapes_ok=True):
    torch.manual_seed(0)
    state = {"features.0.weight": torch.randn(64, 3, 3, 3) * 0.1, "features.0.bias": torch.zeros(64),
             "features.2.weight": torch.randn(64, 64, 3, 3) * 0.05, "features.2.bias": torch.zeros(64),
             "features.5.weight": torch.randn(128, 64, 3, 3) * 0.05, "features.5.bias": torch.zeros(128),
             "features.7.weight": torch.randn(128, 128, 3, 3) * 0.05, "features.7.bias": torch.zeros(128),
             "classifier.0.weight": torch.zeros(1)}
    if not shapes_ok:
        state["features.5.weight"] = torch.zeros(64, 64, 3, 3)
    path = tmp_path / ("vgg.pt" if shapes_ok else "bad.pt")
    torch.save(state, path)
    return path


def test_vgg_perceptual_and_crossmpi_loss(tmp_path):
    with pytest.raises(RefsrError, match="no such VGG-19"):
        VGGPerceptual(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(RefsrError, match="not a readable"):
        VGGPerceptual(tmp_path / "junk.pth")
    with pytest.raises(RefsrError, match="not VGG-19 weights"):
        VGGPerceptual(_vgg_state(tmp_path, shapes_ok=False), layers=("relu1_2", "relu2_2"))
    with pytest.raises(RefsrError, match="missing"):   # file has blocks 1–2 only
        VGGPerceptual(_vgg_state(tmp_path))
    vgg = VGGPerceptual(_vgg_state(tmp_path), layers=("relu1_2", "relu2_2"))
    assert all(not p.requires_grad for p in vgg.parameters())
    hr, lr_synth = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 8, 8)
    sr = hr.clone().requires_grad_(True)
    assert float(vgg(sr, hr).detach()) == 0.0
    sr2 = (hr + 0.1 * torch.randn_like(hr)).requires_grad_(True)
    lr = downscale(hr, 4)
    terms = crossmpi_loss(sr2, hr, {"lr_synth": lr_synth}, lr, perceptual=vgg, return_terms=True)
    assert set(terms) == {"l1", "internal", "perceptual"} and float(terms["perceptual"].detach()) > 0
    total = crossmpi_loss(sr2, hr, {"lr_synth": lr_synth}, lr, perceptual=vgg)
    expected = terms["l1"] + 0.2 * terms["internal"] + terms["perceptual"]
    torch.testing.assert_close(total, expected)
    total.backward()
    assert sr2.grad is not None and sr2.grad.abs().sum() > 0
    no_vgg = crossmpi_loss(sr2, hr, {"lr_synth": lr_synth}, lr)
    torch.testing.assert_close(no_vgg, terms["l1"] + 0.2 * terms["internal"])


def test_folding_batch_norm_keeps_refsrnets_output():
    """Inference folds RefSR-Net's BatchNorms into their convolutions: with running statistics and affine
    parameters far from the identity the network's output stays the same, and no BatchNorm is left."""
    from refsr_cli.archs.blocks import fold_batch_norm

    torch.manual_seed(0)
    model = build_model("refsrnet", cc_channels=[4, 8], cc_dilations=[1, 2], cc_out=8, ss_channels=8, ss_blocks=1,
                        ref_channels=[4, 8, 8, 8])
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    model.eval()
    lr, ref = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = model(lr, ref, 4)[0]
        assert fold_batch_norm(model) == 2
        after = model(lr, ref, 4)[0]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(before, after, atol=1e-5)
