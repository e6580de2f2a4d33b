"""Baselines: bicubic is the one upscaling; PatchMatch uses the reference and finds the true offset."""
import numpy as np
import pytest
import torch
from skimage import data

from refsr_cli.inference.baselines import BASELINES, DESCRIPTIONS, bicubic, patchmatch
from refsr_cli.errors import RefsrError
from refsr_cli.metrics import psnr
from refsr_cli.ops.resize import downscale, upscale

DX, DY = 5, 3  # the LR view's content sits at Ref(p + (DX, DY))


def _crop(image, y, x, h, w):
    return torch.from_numpy(image[y:y + h, x:x + w].transpose(2, 0, 1).copy()).float().div(255)[None]


@pytest.fixture(scope="module")
def shifted_pair():
    """Ref = a 64×96 crop of chelsea, HR = the same scene shifted by (DX, DY) pixels."""
    img = data.chelsea()
    ref = _crop(img, 100, 150, 64, 96)
    hr = _crop(img, 100 + DY, 150 + DX, 64, 96)
    return ref, hr


def test_registry():
    assert set(BASELINES) == {"bicubic", "patchmatch"} and set(DESCRIPTIONS) == set(BASELINES)


def test_bicubic_is_the_projects_upscale(shifted_pair):
    ref, hr = shifted_pair
    lr = downscale(hr, 4)
    sr, aux = bicubic(lr, None, 4)
    assert aux == {} and sr.shape == hr.shape
    assert torch.equal(sr, upscale(lr, 4).clamp(0, 1))
    with pytest.raises(RefsrError):
        bicubic(lr, ref, 4, patch_size=3)


def test_patchmatch_beats_bicubic_and_finds_the_shift(shifted_pair):
    ref, hr = shifted_pair
    lr = downscale(hr, 4)
    sr, aux = patchmatch(lr, ref, 4, search_radius=12)
    base, _ = bicubic(lr, ref, 4)
    gain = psnr(sr[0], hr[0]) - psnr(base[0], hr[0])
    assert gain > 2.0, gain
    assert sr.shape == hr.shape and 0 <= sr.min() and sr.max() <= 1
    assert aux["flow"].shape == (1, 2, 64, 96) and aux["warped"].shape == hr.shape
    # away from the borders (where the content is not in Ref) the field is the true shift
    inner = aux["flow"][0, :, 12:-12, 12:-12].reshape(2, -1)
    assert torch.allclose(inner.median(dim=1).values, torch.tensor([float(DX), float(DY)]), atol=0.25)
    # the pasted sharp patches alone already beat bicubic (the gain is not back-projection's)
    assert psnr(aux["pasted"][0], hr[0]) > psnr(base[0], hr[0]) + 1.0


def test_patchmatch_is_deterministic_and_batched(shifted_pair):
    ref, hr = shifted_pair
    lr = downscale(hr, 8)
    a, _ = patchmatch(lr, ref, 8, iterations=2, seed=3)
    b, _ = patchmatch(lr, ref, 8, iterations=2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    both, aux = patchmatch(torch.cat((lr, lr)), torch.cat((ref, ref)), 8, iterations=2, seed=3,
                           subpixel=False, backproject=0)
    assert both.shape == (2, 3, 64, 96) and aux["flow"].shape == (2, 2, 64, 96)
    centres = aux["flow"][..., ::4, ::4]  # patch centres every s/2 pixels; the flow is interpolated between
    assert torch.equal(centres, centres.round())  # integer offsets without sub-pixel refinement
    # Without the maps (the networks' matcher reads only the paste): the same result and paste.
    lean, lean_aux = patchmatch(lr, ref, 8, iterations=2, seed=3, maps=False)
    full_aux = patchmatch(lr, ref, 8, iterations=2, seed=3)[1]
    assert torch.equal(lean, a) and set(lean_aux) == {"pasted"} and torch.equal(lean_aux["pasted"], full_aux["pasted"])


def test_patchmatch_bad_inputs(shifted_pair):
    ref, hr = shifted_pair
    lr = downscale(hr, 4)
    with pytest.raises(RefsrError, match="reference"):
        patchmatch(lr, None, 4)
    with pytest.raises(RefsrError, match="does not match"):
        patchmatch(lr, ref[..., :-4], 4)
    with pytest.raises(RefsrError):
        patchmatch(lr, ref, 4, search_radius=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_patchmatch_same_on_gpu(shifted_pair):
    ref, hr = shifted_pair
    lr = downscale(hr, 4)
    cpu, cpu_aux = patchmatch(lr, ref, 4, seed=1)
    gpu, gpu_aux = patchmatch(lr.cuda(), ref.cuda(), 4, seed=1)
    assert gpu.is_cuda
    assert np.abs(psnr(gpu[0], hr[0]) - psnr(cpu[0], hr[0])) < 0.05
    assert (gpu_aux["flow"].cpu() - cpu_aux["flow"]).abs().median() < 1e-3


def test_patch_descriptors_are_the_rows_of_a_dilated_strided_unfold():
    """PatchMatch's descriptors (a strided view copied once) and the strips it gathers the reference's
    descriptors from hold, row for row, the samples that ``F.unfold`` takes around each centre (in the
    order sample row, channel, sample column) — at the pitches and strides the baseline and the networks'
    matcher use, odd image sides included."""
    import importlib

    import torch.nn.functional as F

    module = importlib.import_module("refsr_cli.inference.baselines.patchmatch")
    x = torch.rand(1, 2, 37, 51, generator=torch.Generator().manual_seed(0))
    for radius, pitch, stride in ((2, 2, 1), (3, 2, 3), (3, 4, 6), (2, 4, 4), (1, 1, 2)):
        pad, k = radius * pitch, 2 * radius + 1
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        unfolded = F.unfold(padded, k, dilation=pitch, stride=stride)[0].t()
        expected = unfolded.view(-1, 2, k, k).transpose(1, 2).reshape(unfolded.shape)
        assert torch.equal(module._descriptors(x, radius, pitch, stride), expected)
        every = F.unfold(padded, k, dilation=pitch)[0].t()
        at = torch.tensor([0, 50, 51 * 36 + 50, 51 * 17 + 3])
        strips = module._Strips(x, radius, pitch).gather(at)
        assert torch.equal(strips, every[at].view(-1, 2, k, k).transpose(1, 2).reshape(len(at), -1))


def test_paste_in_two_bands_matches_one_band():
    """With more than one torch thread PatchMatch samples its paste in two bands of centre rows at once; the
    result is the one-band paste of a single thread, up to float summation order."""
    g = torch.Generator().manual_seed(3)
    hr = torch.rand(1, 3, 128, 160, generator=g)            # 64×80 centres at ×4: above the two-band threshold
    ref = torch.roll(hr, shifts=(2, -5), dims=(-2, -1))
    lr = downscale(hr, 4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, one_aux = patchmatch(lr, ref, 4, iterations=1)
        torch.set_num_threads(2)
        two, two_aux = patchmatch(lr, ref, 4, iterations=1)
    finally:
        torch.set_num_threads(before)
    assert torch.allclose(one_aux["pasted"], two_aux["pasted"], atol=1e-5)
    assert torch.allclose(one, two, atol=1e-5)


def test_luma_matching_images_are_the_luma_of_the_rgb_ones(shifted_pair):
    """The matcher takes luma before resizing (one channel resized instead of three): resizing and luma are
    both linear, so the images are those of luma taken after, up to float rounding — and so is the guide's
    band."""
    from refsr_cli.inference.baselines.patchmatch import guide_band, matching_images
    from refsr_cli.ops.block_match import luma

    ref, hr = shifted_pair
    lr = downscale(hr, 4)
    for first, after in zip(matching_images(lr, ref, 4, "luma"), matching_images(lr, ref, 4, "rgb")):
        assert first.shape[1] == 1 and torch.allclose(first, luma(after), atol=1e-5)
    for first, after in zip(guide_band(hr, ref, 4, "luma"), guide_band(hr, ref, 4, "rgb")):
        assert first.shape[1] == 1 and torch.allclose(first, luma(after), atol=1e-5)


def test_offers_evaluating_only_new_candidates_give_the_dense_field(shifted_pair, monkeypatch):
    """An offer evaluates only the centres whose candidate differs from their offset (a known cost cannot
    beat itself) unless most differ: the same result with every offer sparse as with every offer dense."""
    import sys

    module = sys.modules["refsr_cli.inference.baselines.patchmatch"]
    ref, hr = shifted_pair
    lr = downscale(hr, 4)
    results = []
    for share in (0.0, 1.0):                     # every offer dense / every offer sparse
        monkeypatch.setattr(module, "_SPARSE_OFFER", share)
        results.append(patchmatch(lr, ref, 4, iterations=2))
    (dense, dense_aux), (sparse, sparse_aux) = results
    assert torch.equal(dense, sparse) and torch.equal(dense_aux["flow"], sparse_aux["flow"])
