"""`refsr infer` end to end on real PNG files: layouts, every method, resume, shards, prealign, bad input."""
import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from refsr_cli.archs import checkpoint
from refsr_cli.archs import build_model, spec, variants
from refsr_cli.cli import main
from refsr_cli.data.image_io import encode_png, read_image
from refsr_cli.inference.pipeline import infer_pairs
from refsr_cli.inference.methods import baselines, load_method
from refsr_cli.data.pairs import discover_pairs
from refsr_cli.ops.prealign import Alignment, prealign, resample_reference
from refsr_cli.ops.resize import downscale, upscale
from refsr_cli.ops.warp import shift

SCALE = 4


def _u8(t):
    return (t.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def _scene(h=64, w=96, y=100, x=180):
    hr = torch.from_numpy(skimage.data.astronaut()[y:y + h, x:x + w]).permute(2, 0, 1).float() / 255
    lr = downscale(hr[None], SCALE)[0]
    ref = shift(hr[None], 2.0, 1.0)[0]
    return hr, lr, ref


def _write_pair(folder, name, hr=True, layout="flat", **scene):
    hr_t, lr, ref = _scene(**scene)
    files = {"lr": lr, "ref": ref, "hr": hr_t} if hr else {"lr": lr, "ref": ref}
    for role, image in files.items():
        path = folder / f"{name}_{role}.png" if layout == "flat" else folder / role / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, _u8(image))


def _run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def _no_partial_files(folder):
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A checkpoint of each variant's tiny configuration (random weights: tests check plumbing)."""
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for name in variants():
        torch.manual_seed(0)
        model = build_model(name, **spec(name).tiny)
        paths[name] = checkpoint.save_checkpoint(folder / f"{name}_x{SCALE}.pt", model, SCALE)
    return paths


def test_flat_subfolder_and_csv_layouts_with_metrics(tmp_path):
    flat, nested = tmp_path / "flat", tmp_path / "nested"
    _write_pair(flat, "a")
    _write_pair(flat, "b", hr=False, y=20, x=60)
    _write_pair(nested, "c", layout="nested")
    (tmp_path / "list.csv").write_text("lr,ref,hr\nflat/a_lr.png,flat/a_ref.png,flat/a_hr.png\n"
                                       "nested/lr/c.png,nested/ref/c.png\n")
    for source, names, scored in ((flat, {"a", "b"}, {"a"}), (nested, {"c"}, {"c"}),
                                  (tmp_path / "list.csv", {"a", "c"}, {"a"})):
        out = tmp_path / f"out_{source.stem}"
        result = _run("infer", source, "--scale", SCALE, "--out", out, "--method", "bicubic")
        assert result.exit_code == 0, result.output
        for name in names:
            image, bits = read_image(out / f"{name}_sr.png")
            assert image.shape == (3, 64, 96) and bits == 8
        metrics = json.loads((out / "metrics.json").read_text())
        assert set(metrics["pairs"]) == scored
        assert 20 < metrics["mean"]["psnr"] < 40 and 0 < metrics["mean"]["ssim"] <= 1
        assert "PSNR" in result.stdout


def test_every_method_on_a_small_pair(tmp_path, tiny_weights):
    _write_pair(tmp_path / "pairs", "p", hr=False)
    methods = list(variants()) + [b for b in baselines() if b not in variants()]
    assert {"bicubic", "patchmatch", "crossnet"} <= set(methods)
    for name in methods:
        out = tmp_path / name
        extra = ["--weights", tiny_weights[name]] if name in tiny_weights else []
        result = _run("infer", tmp_path / "pairs", "--scale", SCALE, "--out", out, "--method", name,
                      "--json", "--save-flow", "--save-warped", "--save-depth", *extra)
        assert result.exit_code == 0, (name, result.output)
        record = json.loads(result.stdout.strip().splitlines()[-1])
        assert record["name"] == "p" and record["output"].endswith("p_sr.png") and record["seconds"] >= 0
        image, _ = read_image(out / "p_sr.png")
        assert image.shape == (3, 64, 96) and torch.isfinite(image).all(), name
        if name in ("crossnet", "crossnetpp", "patchmatch"):  # methods that estimate a flow
            flow = np.load(out / "p_flow.npy")
            assert flow.shape == (2, 64, 96) and flow.dtype == np.float32
            assert iio.imread(out / "p_flow.png").shape == (64, 96, 3)
            assert read_image(out / "p_warped.png")[0].shape == (3, 64, 96)
        if name == "crossmpi":                                 # plane-sweep depth
            assert np.load(out / "p_depth.npy").shape == (64, 96)
            assert iio.imread(out / "p_depth.png").dtype == np.uint16
        if name in ("bicubic", "mdsr"):                        # nothing to save: a notice, not an error
            assert "produces no flow" in result.stderr and not (out / "p_flow.npy").exists()


def test_sixteen_bit_in_sixteen_bit_out_and_gray_input(tmp_path):
    hr, lr, ref = _scene()
    folder = tmp_path / "pairs"
    folder.mkdir()
    lr16 = (lr.permute(1, 2, 0).numpy() * 65535).round().astype(np.uint16)
    (folder / "d_lr.png").write_bytes(encode_png(lr16))           # 16-bit RGB PNG
    iio.imwrite(folder / "t_lr.tif", lr16)                          # 16-bit TIFF
    for name in ("d", "t"):
        iio.imwrite(folder / f"{name}_ref.png", _u8(ref))
    iio.imwrite(folder / "g_lr.png", _u8(lr)[:, :, 0])          # grayscale → converted with a notice
    iio.imwrite(folder / "g_ref.png", _u8(ref))
    result = _run("infer", folder, "--scale", SCALE, "--out", tmp_path / "out", "--method", "bicubic")
    assert result.exit_code == 0, result.output
    expected = upscale(torch.from_numpy(lr16.transpose(2, 0, 1).astype(np.float32) / 65535)[None], SCALE)
    for name in ("d", "t"):
        image, bits = read_image(tmp_path / "out" / f"{name}_sr.png")
        assert bits == 16
        # 16-bit precision survives end to end (8 bits would leave errors up to 2e-3).
        assert float((image - expected[0].clamp(0, 1)).abs().max()) < 2e-5
    assert iio.imread(tmp_path / "out" / "g_sr.png").dtype == np.uint8
    assert "grayscale" in result.stderr


def test_resume_after_interruption(tmp_path):
    for i, (y, x) in enumerate([(0, 0), (100, 100), (200, 200)]):
        _write_pair(tmp_path / "pairs", f"n{i}", hr=False, y=y, x=x)
    pairs = discover_pairs(tmp_path / "pairs")
    out = tmp_path / "out"

    def interrupt(result):  # the user presses Ctrl-C after the first pair
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        infer_pairs(pairs, out, load_method("bicubic", SCALE), on_result=interrupt)
    assert sorted(p.name for p in out.glob("*.png")) == ["n0_sr.png"] and _no_partial_files(out)
    first = (out / "n0_sr.png").stat().st_mtime_ns
    result = _run("infer", tmp_path / "pairs", "--scale", SCALE, "--out", out, "--method", "bicubic", "--json")
    assert result.exit_code == 0, result.output
    status = {r["name"]: r["status"] for r in map(json.loads, result.stdout.strip().splitlines())}
    assert status == {"n0": "skipped", "n1": "done", "n2": "done"}
    assert (out / "n0_sr.png").stat().st_mtime_ns == first
    result = _run("infer", tmp_path / "pairs", "--scale", SCALE, "--out", out, "--method", "bicubic",
                  "--json", "--overwrite")
    assert {json.loads(line)["status"] for line in result.stdout.strip().splitlines()} == {"done"}


def test_shards_partition_and_merge_metrics(tmp_path):
    for i in range(5):
        _write_pair(tmp_path / "pairs", f"s{i}", hr=(i < 2), y=20 * i, x=30 * i, h=32, w=32)
    out = tmp_path / "out"
    seen = []
    for k in range(2):
        result = _run("infer", tmp_path / "pairs", "--scale", SCALE, "--out", out, "--method", "bicubic",
                      "--json", "--shard", f"{k}/2")
        assert result.exit_code == 0, result.output
        seen.append({json.loads(line)["name"] for line in result.stdout.strip().splitlines()})
    assert seen[0] == {"s0", "s2", "s4"} and seen[1] == {"s1", "s3"}
    assert set(json.loads((out / "metrics.json").read_text())["pairs"]) == {"s0", "s1"}
    assert _run("infer", tmp_path / "pairs", "--scale", SCALE, "--out", out, "--shard", "2/2").exit_code == 2


def _rig_pair(zoom=1.25, dx=13.0, dy=-7.0):
    """LR view of a scene and a reference with another field of view: ref(q) = view((q − t) / zoom)."""
    full = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float().div(255)[None]
    hr = full[..., 96:96 + 160, 128:128 + 224]
    lr = downscale(hr, SCALE)
    H, W = 176, 240
    ys, xs = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    sx, sy = (xs - dx) / zoom + 128, (ys - dy) / zoom + 96     # into the full image
    grid = torch.stack((sx * 2 / 511 - 1, sy * 2 / 511 - 1), -1)[None]
    ref = F.grid_sample(full, grid, mode="bicubic", align_corners=True, padding_mode="border").clamp(0, 1)
    return hr[0], lr[0], ref[0]


def test_prealign_recovers_scale_and_shift(tmp_path, tiny_weights):
    hr, lr, ref = _rig_pair()
    aligned, found = prealign(lr, ref, SCALE)
    assert abs(found.scale - 1.25) < 0.01 and abs(found.rotation) < math.radians(0.5)
    assert abs(found.tx - 13.0) < 1.5 and abs(found.ty + 7.0) < 1.5
    assert aligned.shape == (1, 3, 160, 224)

    def psnr(a):
        return -10 * math.log10(float(((a[0] - hr)[:, 4:-4, 4:-4] ** 2).mean()))

    # The resampled reference matches the view about as well as resampling with the true transform
    # (the synthetic reference is itself resampled, hence no higher ceiling), and far better than none.
    exact = resample_reference(ref, Alignment(1.25, 0.0, 13.0, -7.0, 0, 0).matrix, (160, 224))
    unaligned = F.interpolate(ref[None], size=(160, 224), mode="bilinear", align_corners=False)
    assert psnr(aligned) > psnr(exact) - 1.0 and psnr(aligned) > psnr(unaligned) + 5

    folder = tmp_path / "rig"
    folder.mkdir()
    for role, image in (("lr", lr), ("ref", ref), ("hr", hr)):
        iio.imwrite(folder / f"v_{role}.png", _u8(image))
    weights = ["--weights", tiny_weights["crossnet"]]
    result = _run("infer", folder, "--scale", SCALE, "--out", tmp_path / "out", *weights)
    assert result.exit_code == 1 and "--prealign" in result.stderr
    assert "v: reference v_ref.png is 240×176, expected 224×160" in result.stderr
    result = _run("infer", folder, "--scale", SCALE, "--out", tmp_path / "out", *weights,
                  "--prealign", "--save-warped")
    assert result.exit_code == 0, result.output
    assert "scale 1.25" in result.stderr
    warped, _ = read_image(tmp_path / "out" / "v_warped.png")
    assert warped.shape == (3, 160, 224)


def _error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("refsr: error:")]


def test_bad_inputs_fail_one_line_per_pair_and_write_nothing_partial(tmp_path, tiny_weights):
    folder = tmp_path / "pairs"
    _write_pair(folder, "good", hr=False)
    _write_pair(folder, "orphan", hr=False)
    (folder / "orphan_ref.png").unlink()
    _write_pair(folder, "trunc", hr=False)
    data = (folder / "trunc_lr.png").read_bytes()
    (folder / "trunc_lr.png").write_bytes(data[: len(data) // 2])
    iio.imwrite(folder / "tiny_lr.png", np.zeros((5, 7, 3), np.uint8))
    iio.imwrite(folder / "tiny_ref.png", np.zeros((20, 28, 3), np.uint8))
    _write_pair(folder, "wrongref", hr=False)
    iio.imwrite(folder / "wrongref_ref.png", np.zeros((50, 50, 3), np.uint8))
    out = tmp_path / "out"

    result = _run("infer", folder, "--scale", SCALE, "--out", out, "--weights", tiny_weights["crossnet"],
                  "--keep-going")
    assert result.exit_code == 1
    errors = _error_lines(result)
    assert len(errors) == 4
    text = "\n".join(errors)
    assert "orphan: no reference image" in text
    assert "trunc: " in text and "cannot read image" in text
    assert "tiny: LR image tiny_lr.png is 7×5 px" in text
    assert "wrongref: reference wrongref_ref.png is 50×50" in text and "--prealign" in text
    assert sorted(p.name for p in out.glob("*.png")) == ["good_sr.png"] and _no_partial_files(out)

    # Without --keep-going the run stops at the first failure (pairs are processed by name).
    result = _run("infer", folder, "--scale", SCALE, "--out", tmp_path / "out2", "--method", "bicubic")
    assert result.exit_code == 1 and len(_error_lines(result)) == 1

    # Usage errors exit 2: absurd scale, unknown method, bad tile, --half on CPU.
    for args in (["--scale", "0"], ["--scale", "100"], ["--scale", "3", "--method", "crossnet"],
                 ["--scale", "4", "--method", "nonet"], ["--scale", "4", "--tile", "500"],
                 ["--scale", "4", "--half", "--device", "cpu"]):
        result = _run("infer", folder, "--out", out, *args)
        assert result.exit_code == 2, (args, result.output)

    # An output "directory" that cannot be created: one line naming it, exit 1.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = _run("infer", folder, "--scale", SCALE, "--out", blocker / "sub", "--method", "bicubic")
    assert result.exit_code == 1 and "not writable" in result.stderr and len(result.stderr.splitlines()) == 1


def test_missing_weights_name_the_training_command(tmp_path, monkeypatch, tiny_weights):
    _write_pair(tmp_path / "pairs", "p", hr=False)
    monkeypatch.setenv("REFSR_WEIGHTS", str(tmp_path / "empty"))
    result = _run("infer", tmp_path / "pairs", "--scale", SCALE, "--out", tmp_path / "o", "--method", "crossnet")
    assert result.exit_code == 1
    assert "refsr train --variant crossnet --scale 4" in result.stderr
    # A checkpoint of another variant is refused rather than silently used.
    other = next(n for n in tiny_weights if n != "crossnet")
    result = _run("infer", tmp_path / "pairs", "--scale", SCALE, "--out", tmp_path / "o", "--method", "crossnet",
                  "--weights", tiny_weights[other])
    assert result.exit_code == 1 and f"holds a {other} network" in result.stderr


def test_crossmpi_plane_sweep_geometry_options(tmp_path):
    """--baseline / --disparity-range reach Cross-MPI's plane sweep (its depth map spans the range)."""
    import numpy as np

    from refsr_cli.archs import build_model, spec
    from refsr_cli.archs.checkpoint import save_checkpoint
    from refsr_cli.data.image_io import write_image

    torch.manual_seed(0)
    model = build_model("crossmpi", **spec("crossmpi").tiny)
    ckpt = save_checkpoint(tmp_path / "mpi.pt", model, 4)
    pairs = tmp_path / "pairs"
    write_image(pairs / "a_lr.png", torch.rand(3, 16, 16))
    write_image(pairs / "a_ref.png", torch.rand(3, 64, 64))
    out = tmp_path / "sr"
    result = CliRunner().invoke(main, ["--quiet", "infer", str(pairs), "--scale", "4", "--weights", str(ckpt),
                                       "--out", str(out), "--baseline", "1", "0", "--disparity-range", "30", "40",
                                       "--save-depth", "--tile", "0"])
    assert result.exit_code == 0, result.output
    depth = np.load(out / "a_depth.npy")
    assert depth.min() >= 30 - 1e-4 and depth.max() <= 40 + 1e-4
    bad = CliRunner().invoke(main, ["--quiet", "infer", str(pairs), "--scale", "4", "--method", "bicubic",
                                    "--out", str(tmp_path / "b"), "--baseline", "1", "0"])
    assert bad.exit_code == 2


def test_a_networks_output_is_back_projected_onto_its_lr():
    """Every network's output downscales to (nearly) its own LR; an untrained tiny network's does not."""
    from refsr_cli.archs import build_model, spec
    from refsr_cli.inference import BACK_PROJECTION
    from refsr_cli.inference.methods import Method
    from refsr_cli.ops.resize import downscale

    torch.manual_seed(0)
    lr = torch.rand(1, 3, 16, 16)
    ref = torch.rand(1, 3, 64, 64)
    method = Method.from_model(build_model("crossnet", **spec("crossnet").tiny), scale=4)
    assert method.back_projection == BACK_PROJECTION > 0
    sr, _ = method(lr, ref)
    method.back_projection = 0
    raw, _ = method(lr, ref)
    assert (downscale(sr, 4) - lr).abs().mean() < 0.5 * (downscale(raw, 4) - lr).abs().mean()
