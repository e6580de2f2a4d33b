"""The registry is the only place a variant is described: a sixth variant registered *inside this test*
trains, infers and benches through the CLI without any other file knowing its name."""
import json

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

from refsr_cli.archs import REGISTRY, Recipe, register, variants
from refsr_cli.archs.base import RefSRModel
from refsr_cli.archs.checkpoint import load_model
from refsr_cli.cli import main
from refsr_cli.data.image_io import read_image, write_image
from refsr_cli.data.lightfield_dataset import iter_test_pairs
from refsr_cli.ops.resize import upscale

NAME = "toyref"
SEEN = []   # the forward options the toy network was called with, in order


class ToyRefSR(RefSRModel):
    """LR↑ plus a two-layer residual computed from LR↑ and Ref; the reference is its "warped" output."""

    def __init__(self, features: int = 4):
        super().__init__()
        self.config = {"features": features}
        self.body = nn.Sequential(nn.Conv2d(6, features, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(features, 3, 3, padding=1))

    def forward(self, lr, ref, scale, baseline=None):
        SEEN.append({"baseline": baseline})
        up = upscale(lr, scale)
        return up + self.body(torch.cat([up, ref], 1)), {"warped": ref}


@pytest.fixture
def toy_variant():
    """Registers the toy variant for one test and removes it afterwards."""
    register(NAME, paper="a test", summary="toy residual net", scales=(4,), tiny={"features": 2},
             recipe=Recipe(preset={"loss": {"l1": 1.0, "warping": 0.5}}, losses=("warping",),
                           forward_keys=("baseline",),
                           pair_options=lambda model, geometry: {"baseline": tuple(geometry["baseline"])}))(ToyRefSR)
    SEEN.clear()
    yield NAME
    REGISTRY.pop(NAME, None)
    assert NAME not in variants()


def _cli(*args):
    result = CliRunner().invoke(main, ["--quiet", *map(str, args)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_a_sixth_variant_trains_infers_and_benches(toy_variant, tiny_lf_store, tmp_path):
    assert toy_variant in variants()
    run = tmp_path / "run"
    _cli("train", "--variant", toy_variant, "--data", tiny_lf_store, "--out", run, "--iters", 2,
         "--model-size", "tiny", "--crop", 32, 32, "--batch", 1, "--scale", 4, "--device", "cpu",
         "--val-holdout", 0)    # every forward call below is then a training batch's
    config = json.loads((run / "config.json").read_text())
    assert config["loss"] == {"l1": 1.0, "warping": 0.5}              # the recipe's preset
    model, payload = load_model(run / "model.pt")
    assert isinstance(model, ToyRefSR) and payload["variant"] == toy_variant and model.config == {"features": 2}
    # Training batches carry the view pair's baseline, and the recipe routed it into forward.
    assert SEEN and all(isinstance(s["baseline"], torch.Tensor) for s in SEEN)

    SEEN.clear()
    pairs = tmp_path / "pairs"
    name, lr, ref, hr = next(iter_test_pairs(tiny_lf_store / "test.h5", 4, 1))
    write_image(pairs / "a_lr.png", lr)
    write_image(pairs / "a_ref.png", ref)
    _cli("infer", pairs, "--scale", 4, "--weights", run / "model.pt", "--baseline", 0.5, 0.25,
         "--out", tmp_path / "sr")
    sr, _ = read_image(tmp_path / "sr" / "a_sr.png")
    assert sr.shape == hr.shape
    assert SEEN and all(s["baseline"] == (0.5, 0.25) for s in SEEN)   # the recipe's pair_options

    out = tmp_path / "bench"
    _cli("bench", "--data", tiny_lf_store / "test.h5", "--scales", 4, "--views", 7, "--out", out,
         "--methods", f"bicubic,{toy_variant}", "--weights", f"{toy_variant}={run / 'model.pt'}", "--jobs", 1)
    rows = {r["method"]: r for r in json.loads((out / "report.json").read_text())["results"]}
    assert set(rows) == {"bicubic", toy_variant} and rows[toy_variant]["n"] == 2
    assert rows[toy_variant]["psnr"] > 10


def test_a_loss_term_outside_the_recipe_is_refused(toy_variant, tiny_lf_store, tmp_path):
    config = tmp_path / "train.toml"
    config.write_text('[loss]\nl1 = 1.0\nflow = 0.1\n')
    result = CliRunner().invoke(main, ["train", "--variant", toy_variant, "--data", str(tiny_lf_store),
                                       "--out", str(tmp_path / "run"), "--config", str(config), "--iters", "1"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "'flow' loss does not apply to toyref" in result.output


def test_the_default_infer_method_is_the_best_on_the_real_suite_by_the_shipped_cards(tmp_path, monkeypatch):
    """Not hard-coded: the cards' real-suite rows decide, and editing a card changes the choice."""
    from refsr_cli.archs.checkpoint import default_variant, weights_dir

    shipped = weights_dir()
    for scale in (4, 8):
        means = {}
        for card in shipped.glob(f"*_x{scale}.json"):
            doc = json.loads(card.read_text())
            rows = [r["psnr"] for r in doc["bench"][doc["variant"]] if r["data"] == "real"]
            if doc["variant"] != "mdsr" and rows:
                means[doc["variant"]] = sum(rows) / len(rows)
        best = max(means, key=means.get)
        assert default_variant(scale) == (best, pytest.approx(means[best]))
    # A copy of the weights folder in which CrossNet's card claims the best real-suite figures.
    mine = tmp_path / "weights"
    mine.mkdir()
    for f in shipped.iterdir():
        (mine / f.name).symlink_to(f)
    card = json.loads((shipped / "crossnet_x4.json").read_text())
    for row in card["bench"]["crossnet"]:
        row["psnr"] = 99.0
    (mine / "crossnet_x4.json").unlink()
    (mine / "crossnet_x4.json").write_text(json.dumps(card))
    monkeypatch.setenv("REFSR_WEIGHTS", str(mine))
    assert default_variant(4) == ("crossnet", 99.0)
    (mine / "crossnet_x4.pt").unlink()          # no weights, no choice
    assert default_variant(4)[0] != "crossnet"
