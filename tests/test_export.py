"""weights/export.py: a run folder → shipped checkpoint + model card recording every training stage."""
import json
import subprocess
import sys
from pathlib import Path

import torch

from refsr_cli.archs.checkpoint import load_model, read_checkpoint
from refsr_cli.training.config import resolve_config
from refsr_cli.training.loop import train

EXPORT = Path(__file__).resolve().parent.parent / "weights" / "export.py"


def _export(*args) -> None:
    subprocess.run([sys.executable, str(EXPORT), *map(str, args)], check=True, capture_output=True, text=True)


def _config(store, **options):
    return resolve_config("mdsr", scale=4, model_size="tiny", crop=[32, 32], batch=1, checkpoint_every=2,
                          data=[str(store)], **options)


def test_export_records_each_stage_and_convergence(tiny_lf_store, tmp_path):
    val = str(tiny_lf_store / "test.h5")
    first = tmp_path / "runs" / "first"
    train(_config(tiny_lf_store, iters=3, val_every=3), first, device="cpu", val=val)
    # Stage 1 shipped as float16 → its card is what a later stage sees when its run folder is gone.
    _export("mdsr", 4, first, "--out", tmp_path / "stage1", "--wall", 7)
    stage1 = json.loads((tmp_path / "stage1" / "mdsr_x4.json").read_text())
    assert stage1["weights_dtype"] == "float16" and stage1["total_iterations"] == 3
    assert stage1["converged"] is False and stage1["convergence_rule"] is None
    assert [s["run"] for s in stage1["stages"]] == [str(first)]
    # Cards written before stages were recorded keep the stage in their top-level fields.
    del stage1["stages"]
    (tmp_path / "stage1" / "mdsr_x4.json").write_text(json.dumps(stage1))
    # Stage 2 from those weights until the plateau rule stops it (lr 0: nothing can improve).
    second = tmp_path / "runs" / "second"
    plateau = {"patience": 1, "min_delta": 0.02, "gamma": 0.5, "drops": 0}
    result = train(_config(tiny_lf_store, iters=50, val_every=1, lr=0.0, plateau=plateau,
                           init=str(tmp_path / "stage1" / "mdsr_x4.pt")), second, device="cpu", val=val)
    assert result.iterations == 1
    _export("mdsr", 4, second, "--earlier", tmp_path / "stage1" / "mdsr_x4.json", "--float32", "--out", tmp_path / "w")
    card = json.loads((tmp_path / "w" / "mdsr_x4.json").read_text())
    assert card["converged"] is True and "1 validations in a row" in card["convergence_rule"]
    assert [s["iterations"] for s in card["stages"]] == [3, 0]  # stage 2's best is its start (lr 0)
    assert card["stages"][0]["from_card"] == "mdsr_x4.json" and card["stages"][1]["converged"] is True
    assert card["total_iterations"] == 3 and card["val_psnr_history"][0][0] == 0
    assert card["train_config"]["plateau"] == plateau and card["weights_dtype"] == "float32"
    # The shipped file holds stage 2's best checkpoint, loadable on its own.
    model, payload = load_model(tmp_path / "w" / "mdsr_x4.pt")
    best = read_checkpoint(second / "best.pt")["state_dict"]
    assert all(torch.equal(payload["state_dict"][k], best[k]) for k in best)


def test_export_sets_rematching_steps_chosen_after_training_and_refuses_wrong_ones(tiny_lf_store, tmp_path):
    """``--rematch network,gate`` (and ``--matching-patch 3,5,7``): the shipped checkpoint (not the run's)
    rebuilds with those steps and sides, the card says so; steps the network cannot take (MDSR has no matched
    reference) and repeated or malformed sides are refused, nothing written."""
    store = tmp_path / "runs"
    config = {**resolve_config("crossnet", scale=4, model_size="tiny", crop=[32, 32], batch=1, iters=1,
                               checkpoint_every=1, data=[str(tiny_lf_store)])}
    config["model"] = {**config.get("model", {}), "reference_matching": 1, "guided_matching": 1}
    train(config, store / "guided", device="cpu")
    _export("crossnet", 4, store / "guided", "--rematch", "network,gate", "--matching-patch", "3,5,7",
            "--out", tmp_path / "w")
    model, _ = load_model(tmp_path / "w" / "crossnet_x4.pt")
    card = json.loads((tmp_path / "w" / "crossnet_x4.json").read_text())
    assert model.rematch == ("network", "gate") and card["config"]["rematch"] == ["network", "gate"]
    assert "tuning" not in card["rematch_chosen"] and "80 real pairs" in card["rematch_chosen"]
    assert model.matching_patch == (3, 5, 7) and card["config"]["matching_patch"] == [3, 5, 7]
    assert "80 real pairs" in card["matching_patch_chosen"]
    assert load_model(store / "guided" / "model.pt")[0].rematch == ()
    train(_config(tiny_lf_store, iters=1), store / "plain", device="cpu")
    result = subprocess.run([sys.executable, str(EXPORT), "mdsr", "4", str(store / "plain"), "--rematch", "gate",
                             "--out", str(tmp_path / "bad")], capture_output=True, text=True)
    assert result.returncode != 0 and "rematch" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "bad" / "mdsr_x4.pt").exists()
    for sides in ("3,3", "3,x"):                  # repeated or not whole: refused, nothing written
        result = subprocess.run([sys.executable, str(EXPORT), "crossnet", "4", str(store / "guided"),
                                 "--matching-patch", sides, "--out", str(tmp_path / "bad")], capture_output=True, text=True)
        assert result.returncode != 0 and "matching" in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "bad" / "crossnet_x4.pt").exists()
