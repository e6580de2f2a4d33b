"""`refsr train`: every variant trains, exact resume, DDP with gloo, clean errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from refsr_cli.archs.checkpoint import load_model, read_checkpoint
from refsr_cli.cli import main




def _train_args(store, out, variant, iters, extra=()):
    return ["--quiet", "train", "--variant", variant, "--data", str(store), "--out", str(out),
            "--iters", str(iters), "--model-size", "tiny", "--crop", "32", "32", "--batch", "1",
            "--scale", "4", "--checkpoint-every", "2", "--device", "cpu", *extra]


@pytest.mark.parametrize("variant", ["crossnet", "crossnetpp", "crossmpi", "refsrnet", "mdsr"])
def test_every_variant_trains_and_writes_checkpoint_and_log(tiny_lf_store, tmp_path, variant):
    out = tmp_path / variant
    result = CliRunner().invoke(main, _train_args(tiny_lf_store, out, variant, 2))
    assert result.exit_code == 0, result.output
    model, payload = load_model(out / "model.pt")
    assert payload["variant"] == variant and payload["scale"] == 4
    assert payload["meta"]["iterations"] == 2
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["iter"] == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in log if "loss" in r)
    config = json.loads((out / "config.json").read_text())
    assert config["variant"] == variant and config["iters"] == 2


def test_resume_equals_uninterrupted(tiny_lf_store, tmp_path):
    runner = CliRunner()
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert runner.invoke(main, _train_args(tiny_lf_store, straight, "crossnet", 6)).exit_code == 0
    # Same command, interrupted after 3 iterations (the state is saved every 2 and at the stop) ...
    from refsr_cli.training.config import resolve_config
    from refsr_cli.training.loop import train

    config = resolve_config("crossnet", scale=4, iters=6, model_size="tiny", crop=[32, 32], batch=1,
                            checkpoint_every=2, data=[str(tiny_lf_store)])
    first = train(config, split, device="cpu", max_iters_this_call=3)
    assert first.iterations == 3
    # ... then rerun: it resumes and finishes.
    result = runner.invoke(main, _train_args(tiny_lf_store, split, "crossnet", 6))
    assert result.exit_code == 0, result.output
    a = read_checkpoint(straight / "model.pt")["state_dict"]
    b = read_checkpoint(split / "model.pt")["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key


def test_resume_with_other_scale_is_a_clean_error(tiny_lf_store, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    assert runner.invoke(main, _train_args(tiny_lf_store, out, "mdsr", 1)).exit_code == 0
    args = _train_args(tiny_lf_store, out, "mdsr", 2)
    args[args.index("--scale") + 1] = "8"
    result = runner.invoke(main, args)
    assert result.exit_code == 1
    assert "scale mismatch" in result.output and "Traceback" not in result.output


def test_missing_vgg_file_fails_before_training(tiny_lf_store, tmp_path):
    out = tmp_path / "mpi"
    result = CliRunner().invoke(main, _train_args(tiny_lf_store, out, "crossmpi", 1,
                                                  ["--vgg", str(tmp_path / "vgg19.pth")]))
    assert result.exit_code == 1
    assert "vgg19.pth" in result.output
    assert not (out / "model.pt").exists()


def test_crop_larger_than_store_is_a_clean_error(tiny_lf_store, tmp_path):
    args = _train_args(tiny_lf_store, tmp_path / "big", "mdsr", 1)
    args[args.index("--crop") + 1: args.index("--crop") + 3] = ["128", "128"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "larger than" in result.output


def test_two_process_ddp_with_gloo(tiny_lf_store, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "refsr_cli", *_train_args(tiny_lf_store, out, "mdsr", 2)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, payload = load_model(out / "model.pt")
    assert payload["meta"]["iterations"] == 2
    assert json.loads((out / "config.json").read_text())["variant"] == "mdsr"


def test_chained_prepare_train_bench(tmp_path):
    """The README's chained call: each stage uses what the previous one wrote."""
    data, run, report = tmp_path / "data", tmp_path / "run", tmp_path / "report"
    result = CliRunner().invoke(main, [
        "--quiet", "prepare", "synthetic", "--out", str(data), "--count", "2", "--test-count", "1",
        "--size", "64", "96", "--max-disparity", "4", "--jobs", "1",
        "train", "--variant", "crossnet", "--model-size", "tiny", "--iters", "2", "--crop", "32", "32",
        "--batch", "1", "--scale", "4", "--out", str(run), "--device", "cpu",
        "bench", "--out", str(report), "--views", "1", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert (data / "train.h5").exists() and (run / "model.pt").exists()
    rows = json.loads((report / "report.json").read_text())["results"]
    methods = {r["method"] for r in rows}
    assert "crossnet" in methods and "bicubic" in methods
    assert {r["scale"] for r in rows if r["method"] == "crossnet"} == {4}


def test_trained_checkpoint_runs_in_infer(tiny_lf_store, tmp_path):
    from refsr_cli.data.lightfield_dataset import iter_test_pairs
    from refsr_cli.data.image_io import read_image, write_image

    run = tmp_path / "run"
    assert CliRunner().invoke(main, _train_args(tiny_lf_store, run, "crossnet", 1)).exit_code == 0
    pairs = tmp_path / "pairs"
    name, lr, ref, hr = next(iter_test_pairs(tiny_lf_store / "test.h5", 4, 1))
    write_image(pairs / "a_lr.png", lr)
    write_image(pairs / "a_ref.png", ref)
    result = CliRunner().invoke(main, ["--quiet", "infer", str(pairs), "--scale", "4", "--weights",
                                       str(run / "model.pt"), "--out", str(tmp_path / "sr")])
    assert result.exit_code == 0, result.output
    sr, bits = read_image(tmp_path / "sr" / "a_sr.png")
    assert sr.shape == hr.shape and bits == 8


def test_training_samples_carry_the_view_pair_baseline(tiny_lf_store):
    """Cross-MPI's plane sweep gets each sample's baseline: (k/7, k/7) for view (k,k), mirrored by flips."""
    from refsr_cli.data.training_samples import collate, open_training_data

    data = open_training_data([str(tiny_lf_store)], scale=4, crop=(32, 32), views="diagonal", ref_view=(0, 0),
                              parallax_shift=0, flips=True, seed=3)
    signs = set()
    for g in range(24):
        bx, by = data[g]["baseline"].tolist()
        k = round(abs(bx) * 7)
        assert 1 <= k <= 7 and abs(abs(bx) - k / 7) < 1e-6 and abs(abs(by) - k / 7) < 1e-6
        signs.add((bx > 0, by > 0))
    assert len(signs) == 4   # flips in x and y both change the direction
    assert collate([data[0], data[1]])["baseline"].shape == (2, 2)


def test_cuda_without_a_gpu_is_a_clean_error(tiny_lf_store, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    args = _train_args(tiny_lf_store, tmp_path / "gpu", "mdsr", 1)
    args[args.index("--device") + 1] = "cuda"
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "no CUDA GPU" in result.output and "Traceback" not in result.output


@pytest.fixture(scope="module")
def crossnet_run(tiny_lf_store, tmp_path_factory):
    """A 2-iteration tiny CrossNet run folder, the source of the --init tests."""
    out = tmp_path_factory.mktemp("init-source") / "crossnet"
    assert CliRunner().invoke(main, _train_args(tiny_lf_store, out, "crossnet", 2)).exit_code == 0
    return out


def _started_from(store, source: Path, out: Path, variant: str, extra=()) -> tuple[dict, dict]:
    """Run one iteration at lr 0 from ``source``'s weights; the source's and the run's state dicts."""
    result = CliRunner().invoke(main, _train_args(store, out, variant, 1,
                                                  ["--init", str(source / "model.pt"), "--lr", "0", *extra]))
    assert result.exit_code == 0, result.output
    return read_checkpoint(source / "model.pt")["state_dict"], read_checkpoint(out / "model.pt")["state_dict"]


def test_init_starts_from_a_checkpoint_and_checks_it_fits(tiny_lf_store, crossnet_run, tmp_path):
    runner = CliRunner()
    first = crossnet_run
    # lr 0: the second run's weights are exactly the ones it started from.
    second = tmp_path / "second"
    a, b = _started_from(tiny_lf_store, first, second, "crossnet", ["--seed", "5"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((second / "config.json").read_text())["init"] == str(first / "model.pt")
    wrong_variant = runner.invoke(main, _train_args(tiny_lf_store, tmp_path / "w1", "mdsr", 1,
                                                    ["--init", str(first / "model.pt")]))
    assert wrong_variant.exit_code != 0 and "cannot initialise mdsr" in wrong_variant.output
    other_width = tmp_path / "width.toml"
    other_width.write_text("[model]\nwidth = 0.125\n")
    wrong_config = runner.invoke(main, _train_args(tiny_lf_store, tmp_path / "w2", "crossnet", 1,
                                                   ["--init", str(first / "model.pt"), "--config", str(other_width)]))
    assert wrong_config.exit_code != 0 and "does not match" in wrong_config.output
    assert "Traceback" not in wrong_config.output
    # Same tensor shapes, other meaning: the flow heads' scale.
    other_scale = tmp_path / "scale.toml"
    other_scale.write_text("[model]\nflow_scale = 20.0\n")
    wrong_scale = runner.invoke(main, _train_args(tiny_lf_store, tmp_path / "w3", "crossnet", 1,
                                                  ["--init", str(first / "model.pt"), "--config", str(other_scale)]))
    assert wrong_scale.exit_code != 0 and "does not match" in wrong_scale.output


def test_refsrnet_init_may_widen_the_search_window_only(tiny_lf_store, tmp_path):
    """RefSR-Net's search window holds no weights: a run may start from a checkpoint with another window
    (the shipped ×4 converge stage does), but not from one whose layers differ."""
    source = tmp_path / "source"
    assert CliRunner().invoke(main, _train_args(tiny_lf_store, source, "refsrnet", 1)).exit_code == 0
    wider = tmp_path / "wider.toml"
    wider.write_text("[model]\nsearch_radius = 16\nsearch_step = 4\n")
    a, b = _started_from(tiny_lf_store, source, tmp_path / "wide", "refsrnet", ["--config", str(wider)])
    # lr 0 keeps every weight; CC-Net's BatchNorm statistics still move in the one training step.
    weights = [k for k in a if "running_" not in k and "num_batches" not in k]
    assert weights and all(torch.equal(a[k], b[k]) for k in weights)
    assert read_checkpoint(tmp_path / "wide" / "model.pt")["config"]["search_radius"] == 16
    other = tmp_path / "other.toml"
    other.write_text("[model]\ncc_out = 32\n")
    wrong = CliRunner().invoke(main, _train_args(tiny_lf_store, tmp_path / "w", "refsrnet", 1,
                                                 ["--init", str(source / "model.pt"), "--config", str(other)]))
    assert wrong.exit_code != 0 and "does not match" in wrong.output


def test_crossnetpp_starts_from_a_crossnet_checkpoint(tiny_lf_store, crossnet_run, tmp_path):
    a, b = _started_from(tiny_lf_store, crossnet_run, tmp_path / "crossnetpp", "crossnetpp")
    # Both flow networks are CrossNet's, the shared encoder is CrossNet's Ref encoder, the decoder is its decoder.
    expected = {"flownet1": "flownet", "flownet2": "flownet", "encoder": "encoder_ref", "decoder": "decoder"}
    for key, value in b.items():
        module, _, rest = key.partition(".")
        assert torch.equal(value, a[f"{expected[module]}.{rest}"]), key
    # The two CrossNet encoders differ, so the check above tells which one the shared encoder came from.
    assert any(not torch.equal(a[k], a["encoder_ref." + k.partition(".")[2]]) for k in a if k.startswith("encoder_lr."))


def test_plateau_rule_drops_the_rate_then_declares_convergence():
    from refsr_cli.training.plateau import CONVERGED, DROP, PlateauRule

    rule = PlateauRule.from_config({"patience": 2, "min_delta": 0.1, "drops": 1})
    events = [rule.observe(psnr, i) for i, psnr in enumerate([30.0, 30.5, 30.55, 30.58, 30.7, 30.6, 30.65])]
    # 30.55 and 30.58 are within 0.1 dB of 30.5: a plateau of 2 → drop; 30.7 is a gain; then 2 more → stop.
    assert events == [None, None, None, DROP, None, None, CONVERGED]
    assert rule.converged_at == 6 and rule.dropped == 1
    assert PlateauRule.from_config(None) is None and PlateauRule.from_config({}) is None
    with pytest.raises(Exception, match="patience"):
        PlateauRule.from_config({"min_delta": 0.1})


def _plateau_args(store, out, tmp_path, source):
    recipe = tmp_path / "plateau.toml"
    recipe.write_text("val_every = 1\n[plateau]\npatience = 1\nmin_delta = 0.02\ngamma = 0.2\ndrops = 1\n")
    return _train_args(store, out, "mdsr", 20, ["--init", str(source / "model.pt"), "--lr", "1e-6",
                                                  "--val", str(store / "test.h5"), "--config", str(recipe)])


def test_plateau_stops_a_run_and_resume_keeps_its_count(tiny_lf_store, tmp_path):
    from refsr_cli.training.config import load_toml, resolve_config
    from refsr_cli.training.loop import train

    runner = CliRunner()
    source = tmp_path / "source"
    assert runner.invoke(main, _train_args(tiny_lf_store, source, "mdsr", 1)).exit_code == 0
    straight = tmp_path / "straight"
    result = runner.invoke(main, _plateau_args(tiny_lf_store, straight, tmp_path, source))
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    # Scored at 0 (the --init weights), no gain at 1 → lr ×0.2, none at 2 → converged, long before 20.
    assert [r["iter"] for r in log if "val_psnr" in r] == [0, 1, 2]
    events = [(r["iter"], r["plateau"], r["lr"]) for r in log if "plateau" in r]
    assert [e[:2] for e in events] == [(1, "lr_drop"), (2, "converged")]
    assert events[0][2] == pytest.approx(2e-7)
    assert read_checkpoint(straight / "model.pt")["meta"]["iterations"] == 2
    # Rerunning a converged run trains nothing more.
    again = runner.invoke(main, _plateau_args(tiny_lf_store, straight, tmp_path, source)[1:])  # not --quiet
    assert again.exit_code == 0 and "converged at iteration 2" in again.output
    assert read_checkpoint(straight / "model.pt")["meta"]["iterations"] == 2
    # Interrupted after the drop, then resumed: the count and the lowered rate carry over.
    split = tmp_path / "split"
    config = resolve_config("mdsr", load_toml(tmp_path / "plateau.toml"), scale=4, iters=20, model_size="tiny",
                            crop=[32, 32], batch=1, checkpoint_every=2, lr=1e-6, init=str(source / "model.pt"),
                            data=[str(tiny_lf_store)])
    assert train(config, split, device="cpu", val=str(tiny_lf_store / "test.h5"), max_iters_this_call=1).iterations == 1
    assert runner.invoke(main, _plateau_args(tiny_lf_store, split, tmp_path, source)).exit_code == 0
    resumed = [json.loads(line) for line in (split / "log.jsonl").read_text().splitlines()]
    assert [(r["iter"], r["plateau"]) for r in resumed if "plateau" in r] == [(1, "lr_drop"), (2, "converged")]


def test_plateau_without_validation_is_a_clean_error(tiny_lf_store, tmp_path):
    recipe = tmp_path / "plateau.toml"
    recipe.write_text("[plateau]\npatience = 2\n")
    result = CliRunner().invoke(main, _train_args(tiny_lf_store, tmp_path / "run", "mdsr", 2,
                                                  ["--config", str(recipe), "--val-holdout", "0"]))
    assert result.exit_code != 0 and "give --val" in result.output and "Traceback" not in result.output


def test_landmarks_are_computed_when_only_a_stage_uses_them(tiny_lf_store):
    from refsr_cli.training.config import resolve_config
    from refsr_cli.training.loop import training_dataset

    # The landmark term off in the final loss but on in the alignment stage: the stage must get its points.
    config = resolve_config("crossnetpp", scale=4, model_size="tiny", crop=[32, 32], data=[str(tiny_lf_store)],
                            loss={"landmark": 0.0},
                            stages=[{"until": 0.5, "loss": {"charbonnier": 0.0, "warping": 1.0, "landmark": 0.01}}])
    assert training_dataset(config).landmarks is not None
    config["stages"] = []
    assert training_dataset(config).landmarks is None


# ------------------------------------------------------------------------------------------ misuse (issue 20)

def _constant_store(path, values, size=(32, 32)):
    """A light-field store whose light field ``i`` is the constant grey ``values[i]``: a sample tells its source."""
    import numpy as np

    from refsr_cli.data.store import assemble_store, write_part

    parts = []
    for i, value in enumerate(values):
        part = path.parent / f"{path.stem}-{i}.part.h5"
        write_part(part, np.full((8, 8, *size, 3), value, np.uint8), f"grey{value}")
        parts.append((f"grey{value}", part))
    return assemble_store(path, parts, {"source": "test"})


def test_training_holds_validation_items_out_of_its_samples(tmp_path):
    from refsr_cli.data.training_samples import open_training_data

    store = _constant_store(tmp_path / "grey.h5", [20, 60, 100, 140, 180, 220, 240, 250, 10, 30])
    data = open_training_data([str(store)], scale=4, crop=(16, 16), views="random", ref_view=(0, 0),
                              parallax_shift=0, flips=False, seed=0, holdout=2)
    assert len(data.held_out[0]) == 2
    held = {round(float(data.sources[0].evaluation_pair(i)[3].mean()) * 255) for i in data.held_out[0]}
    seen = {round(float(data[g]["hr"].mean()) * 255) for g in range(300)}
    assert seen and held and not seen & held
    assert len(seen) == 8


def test_chained_train_validates_on_training_data_held_out_not_on_the_test_store(tmp_path):
    from refsr_cli.data.store import open_store
    from refsr_cli.data.lightfield_dataset import iter_test_pairs
    from refsr_cli.metrics import psnr

    data, run = tmp_path / "data", tmp_path / "run"
    result = CliRunner().invoke(main, [
        "--quiet", "prepare", "synthetic", "--out", str(data), "--count", "3", "--test-count", "1",
        "--size", "64", "96", "--max-disparity", "4", "--jobs", "1",
        "train", "--variant", "mdsr", "--model-size", "tiny", "--iters", "2", "--crop", "32", "32",
        "--batch", "1", "--scale", "4", "--out", str(run), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    validation = json.loads((run / "config.json").read_text())["validation"]
    assert validation["kind"] == "holdout"
    (store, names), = validation["items"].items()
    train_names, test_names = open_store(data / "train.h5").names, open_store(data / "test.h5").names
    assert Path(store) == (data / "train.h5").resolve() and len(names) == 1
    assert names[0] in train_names and names[0] not in test_names
    # The logged validation PSNR is the held-out light field's, not the test store's.
    model, _ = load_model(run / "best.pt")
    logged = [r["val_psnr"] for r in (json.loads(line) for line in (run / "log.jsonl").read_text().splitlines())
              if "val_psnr" in r]
    index = train_names.index(names[0])
    with torch.no_grad():
        _, lr, ref, hr = list(iter_test_pairs(data / "train.h5", 4, 1))[index]
        sr, _ = model(lr[None], ref[None], 4)
    assert logged and max(logged) == pytest.approx(psnr(sr[0].clamp(0, 1), hr), abs=1e-4)


def test_explicit_val_store_is_recorded(tiny_lf_store, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, _train_args(tiny_lf_store, out, "mdsr", 1,
                                                  ["--val", str(tiny_lf_store / "test.h5")]))
    assert result.exit_code == 0, result.output
    validation = json.loads((out / "config.json").read_text())["validation"]
    assert validation["kind"] == "store" and Path(validation["store"]["path"]) == (tiny_lf_store / "test.h5").resolve()


@pytest.mark.parametrize("option", [["--batch", "0"], ["--checkpoint-every", "0"], ["--val-every", "0"],
                                    ["--iters", "-1"], ["--iters", "0"]])
def test_numbers_out_of_range_are_usage_errors(tiny_lf_store, tmp_path, option):
    args = _train_args(tiny_lf_store, tmp_path / "run", "mdsr", 1)
    name = option[0]
    if name in args:
        args[args.index(name) + 1] = option[1]
    else:
        args += option
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert name in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_out_under_a_regular_file_is_a_clean_error(tiny_lf_store, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = CliRunner().invoke(main, _train_args(tiny_lf_store, tmp_path / "file" / "run", "mdsr", 1))
    assert result.exit_code == 1, result.output
    assert "file" in result.output and result.output.startswith("refsr: error:")
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)


def test_resume_with_other_data_or_schedule_is_refused(tiny_lf_store, tmp_path):
    from refsr_cli.prepare.pipeline import prepare_synthetic

    runner = CliRunner()
    out = tmp_path / "run"
    assert runner.invoke(main, _train_args(tiny_lf_store, out, "mdsr", 2)).exit_code == 0
    config = (out / "config.json").read_text()
    other = tmp_path / "other"
    prepare_synthetic(other, count=3, test_count=1, seed=5, height=64, width=96, max_disparity=4.0, jobs=1)
    for changed, what in ((_train_args(other, out, "mdsr", 2), "stores differ"),
                          (_train_args(tiny_lf_store, out, "mdsr", 2, ["--lr", "1e-3"]), "lr differs"),
                          (_train_args(tiny_lf_store, out, "mdsr", 6), "iters differs")):
        result = runner.invoke(main, changed)
        assert result.exit_code == 1, result.output
        assert "cannot resume" in result.output and what in result.output and "Traceback" not in result.output
        assert (out / "config.json").read_text() == config, "config.json of the run was overwritten"
    # The same run, its store spelled another way (the file instead of the prepare folder): accepted.
    result = runner.invoke(main, _train_args(tiny_lf_store / "train.h5", out, "mdsr", 2))
    assert result.exit_code == 0, result.output
    assert (out / "config.json").read_text() == config


def test_resume_removes_temporaries_and_does_not_repeat_log_rows(tiny_lf_store, tmp_path):
    runner = CliRunner()
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert runner.invoke(main, _train_args(tiny_lf_store, straight, "mdsr", 4, ["--checkpoint-every", "2"]
                                           )).exit_code == 0
    from refsr_cli.training.config import resolve_config
    from refsr_cli.training.loop import train

    config = resolve_config("mdsr", scale=4, iters=4, model_size="tiny", crop=[32, 32], batch=1,
                            checkpoint_every=2, log_every=1, data=[str(tiny_lf_store)])
    train(config, split, device="cpu", max_iters_this_call=2)
    # What a kill -9 during iteration 3's checkpoint leaves: a half-written state and log rows past it.
    (split / ".last.k1ll3d.pt.tmp").write_bytes(b"half a training state")
    (split / ".model.x0x0x0.pt.tmp").write_bytes(b"half a checkpoint")
    with open(split / "log.jsonl", "a") as fh:
        fh.write(json.dumps({"iter": 3, "loss": 1.0}) + "\n" + '{"iter": 4, "lo')
    train(config, split, device="cpu")
    assert not list(split.glob(".*.tmp")) and not list(straight.glob(".*.tmp"))
    iters = [r["iter"] for r in (json.loads(line) for line in (split / "log.jsonl").read_text().splitlines())
             if "loss" in r]
    assert iters == [1, 2, 3, 4]


def test_corrupt_chunk_names_store_light_field_and_view_and_can_be_skipped(tiny_lf_store, tmp_path, corrupt_view):
    import shutil

    store = tmp_path / "train.h5"
    shutil.copy(tiny_lf_store / "train.h5", store)
    corrupt_view(store, 0, 0, 0)
    corrupt_view(store, 1, 0, 0)
    args = _train_args(store, tmp_path / "run", "mdsr", 3, ["--val-holdout", "0"])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("refsr: error:") and str(store) in line and "view (0, 0)" in line
    assert "synthetic-train-0000" in line and "--skip-bad" in line
    result = CliRunner().invoke(main, args[1:] + ["--skip-bad"])     # not --quiet: the notice shows
    assert result.exit_code == 0, result.output
    assert "unreadable" in result.output and "skipped" in result.output
    assert read_checkpoint(tmp_path / "run" / "model.pt")["meta"]["iterations"] == 3


def test_partial_reference_samples_keep_a_rectangle_and_smear_its_border(tiny_lf_store, tmp_path):
    """--partial-reference P: that share of samples gets a reference with content in a rectangle only, the
    rest its nearest border pixel (as a prealigned telephoto reference); P = 0 leaves samples as they were."""
    from refsr_cli.data.training_samples import open_training_data

    args = dict(scale=4, crop=(32, 32), views="diagonal", ref_view=(0, 0), parallax_shift=0, flips=False, seed=3)
    plain = open_training_data([str(tiny_lf_store)], **args)
    partial = open_training_data([str(tiny_lf_store)], **args, partial_reference=1.0)
    changed = 0
    for g in range(8):
        a, b = plain[g], partial[g]
        assert torch.equal(a["hr"], b["hr"]) and torch.equal(a["lr"], b["lr"])
        ref = b["ref"]
        # Every row/column outside the kept rectangle repeats the rectangle's edge row/column.
        rows = [y for y in range(1, 32) if not torch.equal(ref[:, y], ref[:, y - 1])]
        cols = [x for x in range(1, 32) if not torch.equal(ref[:, :, x], ref[:, :, x - 1])]
        y0, y1, x0, x1 = min(rows) - 1, max(rows), min(cols) - 1, max(cols)
        assert torch.equal(ref[:, y0:y1 + 1, x0:x1 + 1], a["ref"][:, y0:y1 + 1, x0:x1 + 1])
        changed += not torch.equal(ref, a["ref"])
    assert changed >= 6
    assert torch.equal(open_training_data([str(tiny_lf_store)], **args, partial_reference=0.0)[5]["ref"], plain[5]["ref"])
    out = tmp_path / "run"
    result = CliRunner().invoke(main, _train_args(tiny_lf_store, out, "refsrnet", 2, ["--partial-reference", "0.5"]))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["partial_reference"] == 0.5
    bad = CliRunner().invoke(main, _train_args(tiny_lf_store, tmp_path / "bad", "refsrnet", 1, ["--partial-reference", "2"]))
    assert bad.exit_code == 2


def test_a_second_run_into_a_folder_in_use_stops_at_once(tiny_lf_store, tmp_path):
    """Two `refsr train` into one run folder would overwrite each other's checkpoints: while one holds the
    folder (here a child process holding its lock, as a running train does), the other exits 1 with one
    line naming the folder, and writes nothing there."""
    import subprocess
    import sys

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from refsr_cli.data.files import folder_lock\n"
        f"with folder_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = CliRunner().invoke(main, _train_args(tiny_lf_store, out, "mdsr", 2))
        assert result.exit_code == 1, result.output
        assert f"{out}: in use" in result.output and "Traceback" not in result.output
        assert list(out.iterdir()) == []
    finally:
        holder.kill()
        holder.wait()
    result = CliRunner().invoke(main, _train_args(tiny_lf_store, out, "mdsr", 2))   # free again: it runs
    assert result.exit_code == 0, result.output


def test_a_run_that_fails_before_writing_leaves_no_folder(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_text("not an HDF5 store")
    result = CliRunner().invoke(main, _train_args(bad, tmp_path / "run", "mdsr", 2))
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "run").exists()
