"""Networks that take the reference patch-matched onto the LR's view (``[model] reference_matching``):
the setting travels with the checkpoint, training / validation / inference all prepare the reference the
same way, and a reference of another scene still goes to single-image SR."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from refsr_cli.archs import build_model
from refsr_cli.archs.checkpoint import load_model, save_checkpoint
from refsr_cli.cli import main
from refsr_cli.inference.baselines.patchmatch import patchmatch
from refsr_cli.inference.matched_reference import (GUIDE_BACK_PROJECTION, MATCHING_SEARCH_RADIUS,
                                                   matched_reference, paste_gate, reference_for_network)
from refsr_cli.inference.methods import Method
from refsr_cli.ops.block_match import match_flow
from refsr_cli.ops.resize import back_project, downscale, upscale


def _scene(seed: int, size=(96, 128)) -> torch.Tensor:
    """A textured 1×3×H×W image (smoothed noise: structure at several scales)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size[0] // 4, size[1] // 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=size, mode="bicubic", align_corners=False)
    return (x + 0.15 * torch.rand(1, 3, *size, generator=g)).clamp(0, 1)


def _write_pair(folder, hr: torch.Tensor, ref: torch.Tensor) -> None:
    """``folder/a_lr.png`` (``hr`` downscaled ×4) and ``folder/a_ref.png``, 8-bit."""
    from refsr_cli.data.image_io import write_image

    folder.mkdir()
    to_png = lambda x: (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    write_image(folder / "a_lr.png", to_png(downscale(hr, 4)))
    write_image(folder / "a_ref.png", to_png(ref))


def test_the_setting_is_kept_in_the_checkpoint_and_refused_below_zero(tmp_path):
    model = build_model("crossmpi", **{**_tiny("crossmpi"), "reference_matching": 2})
    assert model.reference_matching == 2 and model.config["reference_matching"] == 2
    save_checkpoint(tmp_path / "m.pt", model, 4)
    loaded, _ = load_model(tmp_path / "m.pt")
    assert loaded.reference_matching == 2
    assert build_model("crossmpi", **_tiny("crossmpi")).reference_matching == 0
    with pytest.raises(Exception, match="reference_matching"):
        build_model("crossmpi", **{**_tiny("crossmpi"), "reference_matching": -1})


def test_guided_matching_is_kept_and_counts_among_the_iterations(tmp_path):
    model = build_model("crossmpi", **{**_tiny("crossmpi"), "reference_matching": 1, "guided_matching": 1})
    assert model.guided_matching == 1 and model.config["guided_matching"] == 1
    save_checkpoint(tmp_path / "g.pt", model, 4)
    assert load_model(tmp_path / "g.pt")[0].guided_matching == 1
    assert build_model("crossmpi", **{**_tiny("crossmpi"), "reference_matching": 1}).guided_matching == 0
    for wrong in ({"guided_matching": 1}, {"reference_matching": 1, "guided_matching": 2},
                  {"reference_matching": 1, "guided_matching": -1}):
        with pytest.raises(Exception, match="guided_matching"):
            build_model("crossmpi", **{**_tiny("crossmpi"), **wrong})


def test_matching_patch_is_kept_sets_the_patches_and_leaves_older_checkpoints_as_they_were(tmp_path):
    """``matching_patch = 3``: patches of 3 LR pixels (13 HR px at ×4), centres a quarter patch apart (3 px);
    a checkpoint without the key keeps the baseline's 2 LR pixels (9 px, centres 2 px apart)."""
    config = {**_tiny("crossmpi"), "reference_matching": 1, "guided_matching": 1}
    model = build_model("crossmpi", **config, matching_patch=3).eval()
    save_checkpoint(tmp_path / "p.pt", model, 4)
    assert load_model(tmp_path / "p.pt")[0].matching_patch == 3 and model.config["matching_patch"] == 3
    hr = _scene(3, (96, 160))
    ref = torch.roll(hr, shifts=(4, 19), dims=(2, 3))
    lr = downscale(hr, 4)
    flow, _ = match_flow(lr, downscale(ref, 4))
    options = dict(search_radius=MATCHING_SEARCH_RADIUS, features="luma", init_flow=flow, backproject=0)
    for network, side, stride in ((model, 13, 3), (build_model("crossmpi", **config).eval(), 9, 2)):
        start = patchmatch(lr, ref, 4, iterations=0, patch_size=side, stride=stride, **options)[1]["pasted"]
        guide = back_project(start, lr, 4, GUIDE_BACK_PROJECTION)
        expected = patchmatch(lr, ref, 4, iterations=1, guide=guide, patch_size=side, stride=stride, **options)
        assert torch.equal(reference_for_network(network, lr, ref, 4), expected[1]["pasted"])
    for wrong in ({"matching_patch": 0}, {"matching_patch": 2.5}, {"matching_patch": "three"},
                  {"reference_matching": 0, "guided_matching": 0, "matching_patch": 3}):
        with pytest.raises(Exception, match="matching_patch"):
            build_model("crossmpi", **{**config, **wrong})


def test_several_matching_patches_are_kept_and_blend_their_pastes_by_their_agreement_with_the_lr(tmp_path):
    """``matching_patch = [3, 5]``: the reference is matched once per side from the same block matching, each
    side's guided iteration guided by the first side's block-matching paste, and the pastes are blended per
    pixel by their LR residual (``paste_consensus``): the blend lies between the two pastes everywhere, and
    where one paste is wrong (it does not downsample to the LR) the other wins."""
    from refsr_cli.inference.matched_reference import lr_residual, paste_consensus

    config = {**_tiny("crossmpi"), "reference_matching": 1, "guided_matching": 1}
    model = build_model("crossmpi", **config, matching_patch=[3, 5]).eval()
    save_checkpoint(tmp_path / "m.pt", model, 4)
    assert load_model(tmp_path / "m.pt")[0].matching_patch == (3, 5) and model.config["matching_patch"] == [3, 5]
    hr = _scene(3, (96, 160))
    ref = torch.roll(hr, shifts=(4, 19), dims=(2, 3))
    lr = downscale(hr, 4)
    blended = reference_for_network(model, lr, ref, 4)
    guide = back_project(matched_reference(lr, ref, 4, 0, patch=3), lr, 4, GUIDE_BACK_PROJECTION)
    three, five = (matched_reference(lr, ref, 4, 1, 1, side, guide=guide) for side in (3, 5))
    assert torch.equal(three, matched_reference(lr, ref, 4, 1, 1, 3))
    assert torch.equal(matched_reference(lr, ref, 4, 1, 1, (3,)), three)
    assert torch.equal(blended, paste_consensus([three, five], lr, 4))
    assert not torch.equal(blended, three) and not torch.equal(blended, five)
    low, high = torch.minimum(three, five), torch.maximum(three, five)
    assert bool(((blended >= low - 1e-5) & (blended <= high + 1e-5)).all())
    # One paste right, one with a wrong block (another scene's content): the blend follows the right one.
    wrong = hr.clone()
    wrong[..., 32:64, 48:112] = _scene(9, (32, 64))
    mixed = paste_consensus([wrong, hr], lr, 4)
    inside = (..., slice(40, 56), slice(56, 104))
    assert (mixed - hr)[inside].abs().mean() < 0.1 * (wrong - hr)[inside].abs().mean()
    assert float(lr_residual(hr, lr, 4).max()) < 1e-4 < float(lr_residual(wrong, lr, 4)[inside].min())
    for wrong_sides in ([3, 3], [], [3, 0], [3, True]):
        with pytest.raises(Exception, match="matching_patch"):
            build_model("crossmpi", **config, matching_patch=wrong_sides)


def test_training_and_infer_take_several_matching_patches(tiny_lf_store, tmp_path):
    """A recipe's ``matching_patch = [2, 3]`` trains and validates on the blended paste, the checkpoint keeps
    the list, and ``refsr infer`` runs it and says so."""
    recipe = tmp_path / "patches.toml"
    recipe.write_text("paste_gate_loss = true\n[model]\nreference_matching = 1\nguided_matching = 1\n"
                      "matching_patch = [2, 3]\nmin_disparity = -2.0\nmax_disparity = 2.0\n")
    runner = CliRunner()
    result = runner.invoke(main, ["--quiet", "train", "--variant", "crossmpi", "--data", str(tiny_lf_store),
                                  "--model-size", "tiny", "--crop", "48", "48", "--batch", "2", "--scale", "4",
                                  "--device", "cpu", "--iters", "2", "--val-every", "2", "--checkpoint-every", "2",
                                  "--out", str(tmp_path / "run"), "--config", str(recipe)])
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["val_psnr"]) for r in log if "val_psnr" in r) and any("loss" in r for r in log)
    assert load_model(tmp_path / "run" / "model.pt")[0].matching_patch == (2, 3)
    pairs = tmp_path / "pairs"
    hr = _scene(3, (64, 96))
    _write_pair(pairs, hr, torch.roll(hr, 9, 3))
    result = runner.invoke(main, ["infer", str(pairs), "--scale", "4", "--weights", str(tmp_path / "run" / "model.pt"),
                                  "--out", str(tmp_path / "sr")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sr" / "a_sr.png").exists() and "patches of 2, 3 LR px, pastes blended" in result.output


def test_rematch_steps_are_kept_refused_without_guided_matching_and_run_on_the_output_guided_reference(
        tiny_lf_store, tmp_path):
    """``rematch = ["network", "gate"]``: after the first pass the reference is matched again with the output
    as the guide of its guided iteration (the guide replaces the block matching's paste, whose back-projection
    the first pass's matching used) and the network runs on it, then once more and the output only passes
    the paste gate with that reference; a better guide pastes closer to the HR."""
    from refsr_cli.inference.footprint import pair_inference
    from refsr_cli.inference.matched_reference import rematched_reference

    config = {**_tiny("crossmpi"), "reference_matching": 1, "guided_matching": 1, "matching_patch": 3}
    model = build_model("crossmpi", **config, rematch=["network", "gate"]).eval()
    save_checkpoint(tmp_path / "r.pt", model, 4)
    assert load_model(tmp_path / "r.pt")[0].rematch == ("network", "gate")
    assert model.config["rematch"] == ["network", "gate"]
    assert "rematch" not in build_model("crossmpi", **config).config
    for wrong in ({"rematch": "network"}, {"rematch": ["net"]}, {"rematch": [1]},
                  {"guided_matching": 0, "rematch": ["gate"]}):
        with pytest.raises(Exception, match="rematch"):
            build_model("crossmpi", **{**config, **wrong})

    hr = _scene(8, (96, 160))
    ref, lr = torch.roll(hr, shifts=(3, 21), dims=(2, 3)), downscale(hr, 4)
    block_paste = back_project(matched_reference(lr, ref, 4, 0, patch=3), lr, 4, GUIDE_BACK_PROJECTION)
    assert torch.equal(matched_reference(lr, ref, 4, 1, 1, 3, guide=block_paste), matched_reference(lr, ref, 4, 1, 1, 3))
    err = lambda a: float(((a - hr)[..., 12:-12, 32:-32] ** 2).mean())
    assert err(rematched_reference(model, lr, ref, 4, hr)) < err(matched_reference(lr, ref, 4, 1, 1, 3))
    with pytest.raises(Exception, match="guide"):
        matched_reference(lr, ref, 4, 1, 0, 3, guide=hr)

    method = Method.from_model(model, scale=4)
    sr, _ = pair_inference(method, lr, ref)
    first, _ = method(lr, method.bind_pair(lr, ref))
    second, _ = method(lr, rematched_reference(model, lr, ref, 4, first))
    third = paste_gate(second, rematched_reference(model, lr, ref, 4, second), lr, 4, method.back_projection)
    assert method.rematch_steps == ("network", "gate") and torch.equal(sr, third)
    assert not torch.equal(second, first) and not torch.equal(third, second)
    method.bind_pair(lr, _scene(7, (96, 160)))               # another scene: single-image SR, no steps
    assert method.reference_unmatched and method.rematch_steps == ()

    recipe = tmp_path / "rematch.toml"                       # validation runs the steps as inference does
    recipe.write_text("paste_gate_loss = true\n[model]\nreference_matching = 1\nguided_matching = 1\n"
                      "rematch = ['network', 'gate']\nmin_disparity = -2.0\nmax_disparity = 2.0\n")
    result = CliRunner().invoke(main, ["--quiet", "train", "--variant", "crossmpi", "--data", str(tiny_lf_store),
                                       "--model-size", "tiny", "--crop", "32", "32", "--batch", "2", "--scale", "4",
                                       "--device", "cpu", "--iters", "2", "--val-every", "2",
                                       "--checkpoint-every", "2", "--out", str(tmp_path / "run"),
                                       "--config", str(recipe)])
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any(np.isfinite(r.get("val_psnr", np.nan)) for r in log)
    assert load_model(tmp_path / "run" / "model.pt")[0].rematch == ("network", "gate")


def test_guided_iterations_start_again_from_block_matching_guided_by_the_paste_before_and_match_better():
    """``guided = 1`` of 1 iteration: the block matching's own paste, back-projected onto the LR, guides the
    iteration, whose patch distance then also compares the band twice the LR's; on a displaced textured
    scene whose detail is finer than the LR, its paste is closer to the HR than the unguided iteration's."""
    errors = {}
    for seed in (4, 5, 6):
        hr = _scene(seed, (96, 160))
        ref = torch.roll(hr, shifts=(5, 23), dims=(2, 3))
        lr = downscale(hr, 4)
        plain = matched_reference(lr, ref, 4, 1)
        guided = matched_reference(lr, ref, 4, 1, guided=1)
        flow, _ = match_flow(lr, downscale(ref, 4))
        options = dict(search_radius=MATCHING_SEARCH_RADIUS, features="luma", init_flow=flow, backproject=0)
        start = patchmatch(lr, ref, 4, iterations=0, **options)[1]["pasted"]
        _, aux = patchmatch(lr, ref, 4, iterations=1, guide=back_project(start, lr, 4, GUIDE_BACK_PROJECTION),
                            **options)
        assert torch.equal(guided, aux["pasted"])
        err = lambda a: float(((a - hr)[..., 12:-12, 32:-32] ** 2).mean())
        errors[seed] = (err(plain), err(guided))
    assert all(g < p for p, g in errors.values()), errors
    with pytest.raises(Exception, match="guided"):
        matched_reference(lr, ref, 4, 1, guided=2)


def _tiny(variant):
    from refsr_cli.archs import spec

    return dict(spec(variant).tiny)


def test_matched_reference_is_patchmatch_from_block_matching_before_back_projection():
    hr = _scene(0)
    ref = torch.roll(hr, shifts=(3, 17), dims=(2, 3))          # the same scene, displaced
    lr = downscale(hr, 4)
    pasted = matched_reference(lr, ref, 4, 2)
    flow, _ = match_flow(lr, downscale(ref, 4))
    _, aux = patchmatch(lr, ref, 4, iterations=2, search_radius=MATCHING_SEARCH_RADIUS, features="luma",
                        init_flow=flow, backproject=0)
    assert torch.equal(pasted, aux["pasted"])
    # The matched reference sits where the LR says: far closer to the HR than the displaced reference.
    err = lambda a: float(((a - hr)[..., 8:-8, 24:-24] ** 2).mean())
    assert err(pasted) < 0.25 * err(ref)


def test_one_iteration_reaches_a_displacement_far_beyond_the_search_radius():
    """The block-matching start brings a 48 px displacement (6× the refinement's search radius) within reach
    of a single iteration; a random start with the same radius and iteration does not find it."""
    hr = _scene(2, (96, 256))
    ref = torch.roll(hr, shifts=48, dims=3)
    lr = downscale(hr, 4)
    # columns whose match is in view (those of the last 48 wrapped around to the reference's left edge)
    err = lambda a: float(((a - hr)[..., 8:-8, 16:-64] ** 2).mean())
    _, random_start = patchmatch(lr, ref, 4, iterations=1, search_radius=MATCHING_SEARCH_RADIUS, backproject=0)
    matched = matched_reference(lr, ref, 4, 1)
    assert err(matched) < 0.2 * err(random_start["pasted"])
    assert err(matched) < 0.1 * err(ref)


def test_bind_pair_gives_a_matching_network_the_matched_reference_and_ignores_another_scene():
    model = build_model("crossmpi", **{**_tiny("crossmpi"), "reference_matching": 1}).eval()
    method = Method.from_model(model, scale=4)
    hr = _scene(1)
    ref = torch.roll(hr, shifts=20, dims=3)
    lr = downscale(hr, 4)
    given = method.bind_pair(lr, ref)
    assert torch.equal(given, matched_reference(lr, ref, 4, 1))
    assert method.pair_options == {} and method.reference_shift == (0, 0) and not method.reference_unmatched
    # A reference of another scene is not pasted into the output: single-image SR takes the pair.
    other = _scene(7)
    assert method.bind_pair(lr, other) is not None and method.reference_unmatched
    # The plain network (no matching) is handed its raw reference.
    plain = Method.from_model(build_model("crossmpi", **_tiny("crossmpi")).eval(), scale=4)
    plain.forward_options = {"baseline": (1.0, 0.0)}
    assert torch.equal(plain.bind_pair(lr, ref), ref)
    assert reference_for_network(plain.model, lr, ref, 4) is ref


def test_as_inferred_is_what_inference_gives_and_paste_gate_loss_trains_and_validates_on_it(tiny_lf_store, tmp_path):
    """``paste_gate_loss``: the loss and the validation score the output as ``Method`` returns it
    (back-projected, through the paste gate), which a matching network scores better on than its raw
    output; without ``reference_matching`` the setting is a clear error."""
    from refsr_cli.inference import BACK_PROJECTION
    from refsr_cli.inference.matched_reference import as_inferred

    model = build_model("crossmpi", **{**_tiny("crossmpi"), "reference_matching": 1, "guided_matching": 1}).eval()
    hr = _scene(7, (64, 96))
    lr, ref = downscale(hr, 4), torch.roll(hr, shifts=(2, 11), dims=(2, 3))
    method = Method.from_model(model, scale=4)
    matched = method.bind_pair(lr, ref)
    with torch.no_grad():
        raw = model(lr, matched, 4)[0]
    assert torch.allclose(method(lr, matched)[0], as_inferred(raw, matched, lr, 4, BACK_PROJECTION), atol=1e-5)

    runner = CliRunner()
    common = ["--quiet", "train", "--variant", "crossmpi", "--data", str(tiny_lf_store), "--model-size", "tiny",
              "--crop", "32", "32", "--batch", "2", "--scale", "4", "--device", "cpu", "--iters", "2",
              "--val-every", "2", "--checkpoint-every", "2"]
    val = {}
    for gated in (False, True):
        recipe = tmp_path / f"gated{gated}.toml"
        recipe.write_text(f"paste_gate_loss = {str(gated).lower()}\n[model]\nreference_matching = 1\n"
                          "min_disparity = -2.0\nmax_disparity = 2.0\n")
        out = tmp_path / f"run{gated}"
        result = runner.invoke(main, [*common, "--out", str(out), "--config", str(recipe)])
        assert result.exit_code == 0, result.output
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        val[gated] = next(r["val_psnr"] for r in log if "val_psnr" in r and r["iter"] == 2)
        assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    assert val[True] > val[False] + 0.5, val
    for text, message in (("paste_gate_loss = true\n", "reference_matching"),
                          ("paste_gate_loss = 'yes'\n[model]\nreference_matching = 1\n", "true or false")):
        recipe = tmp_path / "bad.toml"
        recipe.write_text(text)
        result = runner.invoke(main, [*common, "--out", str(tmp_path / "bad"), "--config", str(recipe)])
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
        assert not (tmp_path / "bad").exists()      # refused before any run folder is made


def test_training_with_reference_matching_runs_from_raw_weights_and_validates_matched(tiny_lf_store, tmp_path):
    """A raw-reference checkpoint initialises a matching run (the setting holds no weights); the run trains,
    validates on matched references, and its checkpoint carries the setting to inference."""
    runner = CliRunner()
    common = ["--quiet", "train", "--variant", "crossmpi", "--data", str(tiny_lf_store), "--model-size", "tiny",
              "--crop", "32", "32", "--batch", "2", "--scale", "4", "--checkpoint-every", "2", "--device", "cpu"]
    raw = tmp_path / "raw"
    assert runner.invoke(main, [*common, "--out", str(raw), "--iters", "2"]).exit_code == 0
    recipe = tmp_path / "matched.toml"
    recipe.write_text("[model]\nreference_matching = 1\nguided_matching = 1\nmin_disparity = -2.0\nmax_disparity = 2.0\n")
    out = tmp_path / "matched"
    result = runner.invoke(main, [*common, "--out", str(out), "--iters", "4", "--val-every", "2",
                                  "--init", str(raw / "model.pt"), "--config", str(recipe)])
    assert result.exit_code == 0, result.output
    model, payload = load_model(out / "model.pt")
    assert model.reference_matching == 1 and model.guided_matching == 1 and payload["config"]["min_disparity"] == -2.0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log if "val_psnr" in r] == [0, 2, 4]
    assert all(np.isfinite(r["val_psnr"]) for r in log if "val_psnr" in r)
    # infer runs it on a pair folder (the whole pair is matched before the network).
    pairs = tmp_path / "pairs"
    hr = _scene(3, (64, 96))
    _write_pair(pairs, hr, torch.roll(hr, 9, 3))
    result = runner.invoke(main, ["--quiet", "infer", str(pairs), "--scale", "4", "--weights", str(out / "model.pt"),
                                  "--out", str(tmp_path / "sr"), "--json"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sr" / "a_sr.png").exists()
    line = json.loads([row for row in result.stdout.splitlines() if row.startswith("{")][-1])
    assert line["geometry"]["reference_matching"] == 1 and line["geometry"]["guided_matching"] == 1


def test_geometry_flags_are_refused_for_a_network_that_takes_a_matched_reference(tmp_path):
    """--baseline / --disparity-range / --reference-shift describe a displacement that matching has already
    removed: given with such a checkpoint they are a usage error, not silently applied to the matched reference."""
    model = build_model("crossmpi", **{**_tiny("crossmpi"), "reference_matching": 1})
    save_checkpoint(tmp_path / "m.pt", model, 4)
    pairs = tmp_path / "pairs"
    hr = _scene(4, (64, 96))
    _write_pair(pairs, hr, hr)
    for flags in (["--baseline", "1", "0"], ["--disparity-range", "0", "8"], ["--reference-shift", "2", "0"]):
        result = CliRunner().invoke(main, ["infer", str(pairs), "--scale", "4", "--weights", str(tmp_path / "m.pt"),
                                           "--out", str(tmp_path / "sr"), *flags])
        assert result.exit_code == 2, result.output
        assert "reference_matching" in result.output
        assert not (tmp_path / "sr" / "a_sr.png").exists()


def test_the_paste_gate_takes_the_paste_where_it_agrees_with_the_lr_and_the_network_elsewhere():
    """Left half: a correct paste (the HR itself) replaces the network's blurry output; right half: a paste
    of another scene is not copied — the output there stays the network's (back-projected) output."""
    hr, other = _scene(5), _scene(6)
    lr = downscale(hr, 4)
    sr = upscale(lr, 4)                                    # a network that adds no detail
    pasted = torch.cat((hr[..., :64], other[..., 64:]), dim=3)
    out = paste_gate(sr, pasted, lr, 4, rounds=2)
    err = lambda a, cols: float(((a - hr)[..., 8:-8, cols] ** 2).mean())
    left, right = slice(8, 48), slice(80, 120)
    assert err(out, left) < 0.1 * err(sr, left)
    assert abs(err(out, right) - err(back_project(sr, lr, 4, 2), right)) < 0.05 * err(sr, right)
    assert err(out, right) < 0.5 * err(pasted, right)


def test_infer_applies_the_paste_gate_to_a_matching_network_and_records_it(tmp_path):
    """On by default for a checkpoint with reference_matching (off for others); --no-paste-gate changes the
    pixels, so a rerun into the same folder with it is refused without --overwrite."""
    model = build_model("crossmpi", **{**_tiny("crossmpi"), "reference_matching": 1})
    save_checkpoint(tmp_path / "m.pt", model, 4)
    pairs = tmp_path / "pairs"
    hr = _scene(8, (64, 96))
    _write_pair(pairs, hr, torch.roll(hr, 5, 3))
    base = ["--quiet", "infer", str(pairs), "--scale", "4", "--weights", str(tmp_path / "m.pt"), "--out"]
    runner = CliRunner()
    assert runner.invoke(main, [*base, str(tmp_path / "on")]).exit_code == 0
    assert json.loads((tmp_path / "on" / "settings.json").read_text())["paste_gate"] is True
    refused = runner.invoke(main, [*base, str(tmp_path / "on"), "--no-paste-gate"])
    assert refused.exit_code != 0 and "--paste-gate" in refused.output, refused.output
    assert runner.invoke(main, [*base, str(tmp_path / "off"), "--no-paste-gate"]).exit_code == 0
    assert json.loads((tmp_path / "off" / "settings.json").read_text())["paste_gate"] is False
    from refsr_cli.data.image_io import read_image

    assert not torch.equal(read_image(tmp_path / "on" / "a_sr.png")[0], read_image(tmp_path / "off" / "a_sr.png")[0])
    assert Method.from_model(build_model("crossmpi", **_tiny("crossmpi")), scale=4).paste_gate is False


def _infer_on_a_pair(tmp_path):
    """``infer(weights, out, *options)``: ``refsr infer`` at ×4 on a folder of one displaced textured pair,
    ``weights`` and ``out`` named inside ``tmp_path``."""
    pairs = tmp_path / "pairs"
    hr = _scene(9, (64, 96))
    _write_pair(pairs, hr, torch.roll(hr, (2, 7), (2, 3)))
    runner = CliRunner()
    return lambda weights, out, *more: runner.invoke(main, ["infer", str(pairs), "--scale", "4", "--weights",
                                                            str(tmp_path / weights), "--out", str(tmp_path / out), *more])


def test_infer_runs_the_rematching_steps_records_them_and_turns_them_off_with_no_rematch(tmp_path):
    """A checkpoint with ``rematch``: ``refsr infer`` runs its steps and records them (a rerun without them
    into the same folder is refused, and gives other pixels); a folder recorded before the setting existed
    still resumes for a checkpoint without steps."""
    from refsr_cli.data.image_io import read_image

    config = {**_tiny("crossmpi"), "reference_matching": 1, "guided_matching": 1}
    save_checkpoint(tmp_path / "r.pt", build_model("crossmpi", **config, rematch=["network", "gate"]), 4)
    save_checkpoint(tmp_path / "p.pt", build_model("crossmpi", **config), 4)
    infer = _infer_on_a_pair(tmp_path)
    result = infer("r.pt", "on")
    assert result.exit_code == 0, result.output
    assert "matched again guided by the output: network, gate" in result.output
    assert json.loads((tmp_path / "on" / "settings.json").read_text())["rematch"] == ["network", "gate"]
    refused = infer("r.pt", "on", "--no-rematch")
    assert refused.exit_code != 0 and "--rematch/--no-rematch network, gate (this run: off)" in refused.output
    assert infer("r.pt", "off", "--no-rematch").exit_code == 0
    assert json.loads((tmp_path / "off" / "settings.json").read_text())["rematch"] == []
    assert not torch.equal(read_image(tmp_path / "on" / "a_sr.png")[0], read_image(tmp_path / "off" / "a_sr.png")[0])
    assert infer("p.pt", "plain").exit_code == 0
    record = json.loads((tmp_path / "plain" / "settings.json").read_text())
    del record["rematch"]                                    # as written before rematching existed
    (tmp_path / "plain" / "settings.json").write_text(json.dumps(record))
    again = infer("p.pt", "plain")
    assert again.exit_code == 0 and "skipped" in again.output.lower(), again.output


def test_infer_matching_patch_overrides_the_sides_records_them_and_refuses_what_does_not_apply(tmp_path):
    """``refsr infer --matching-patch 2,3``: the reference is matched with those sides instead of the card's,
    the notice and ``settings.json`` say so, a rerun into that folder with the card's sides is refused (and
    gives other pixels), as is a folder whose record predates the setting; malformed sides and a network
    that takes the raw reference are usage errors."""
    from refsr_cli.data.image_io import read_image

    config = {**_tiny("crossmpi"), "reference_matching": 1, "guided_matching": 1}
    save_checkpoint(tmp_path / "p.pt", build_model("crossmpi", **config), 4)
    save_checkpoint(tmp_path / "raw.pt", build_model("crossmpi", **_tiny("crossmpi")), 4)
    infer = _infer_on_a_pair(tmp_path)
    result = infer("p.pt", "two", "--matching-patch", "2,3")
    assert result.exit_code == 0, result.output
    assert "patches of 2, 3 LR px, pastes blended" in result.output
    assert json.loads((tmp_path / "two" / "settings.json").read_text())["matching_patch"] == [2, 3]
    refused = infer("p.pt", "two")
    assert refused.exit_code != 0 and "--matching-patch 2,3 (this run: 2)" in refused.output
    assert infer("p.pt", "one").exit_code == 0
    assert json.loads((tmp_path / "one" / "settings.json").read_text())["matching_patch"] == [2]
    assert not torch.equal(read_image(tmp_path / "two" / "a_sr.png")[0], read_image(tmp_path / "one" / "a_sr.png")[0])
    record = json.loads((tmp_path / "one" / "settings.json").read_text())
    del record["matching_patch"]                             # as written before the setting existed
    (tmp_path / "one" / "settings.json").write_text(json.dumps(record))
    old = infer("p.pt", "one")
    assert old.exit_code != 0 and "--matching-patch unrecorded (this run: 2)" in old.output
    for bad in ("3,3", "0", "three", "3,"):
        result = infer("p.pt", "bad", "--matching-patch", bad)
        assert result.exit_code == 2 and "--matching-patch" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "bad").exists()                  # refused before the output folder is made
    result = infer("raw.pt", "raw", "--matching-patch", "3")
    assert result.exit_code == 2 and "reference_matching" in result.output and not any((tmp_path / "raw").iterdir())
