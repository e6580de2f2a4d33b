"""Each shipped checkpoint is reproducible from its recipe: ``weights/train.sh V S`` trains
``weights/recipes/V_xS.toml`` (else ``V.toml``), then ``V_xS_converge.toml``, ``V_xS_real.toml`` and
``V_xS_guided.toml`` where they exist, and exports the last; that recipe must build the architecture the checkpoint holds, match the schedule its card
records, and start (``init``) from a shipped checkpoint it can load."""
import json
import subprocess
from pathlib import Path

import pytest

from refsr_cli.archs import build_model
from refsr_cli.archs.checkpoint import read_checkpoint
from refsr_cli.training.config import load_toml, model_kwargs, resolve_config
from refsr_cli.training.initialise import initialise

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "weights").glob("*_x[48].pt"))
# The schedule a recipe fixes; the card's train_config must agree on all of them.
SCHEDULE = ("iters", "batch", "crop", "lr", "milestones", "gamma", "views", "parallax_shift", "loss", "stages",
            "plateau")


def _converge_recipe(checkpoint: Path) -> Path:
    return ROOT / "weights" / "recipes" / f"{checkpoint.stem}_converge.toml"


def _real_recipe(checkpoint: Path) -> Path:
    return ROOT / "weights" / "recipes" / f"{checkpoint.stem}_real.toml"


def _guided_recipe(checkpoint: Path) -> Path:
    return ROOT / "weights" / "recipes" / f"{checkpoint.stem}_guided.toml"


def _recipe(checkpoint: Path) -> Path:
    """The recipe of the stage whose run is exported: the guided-matching stage, else the real-pair stage,
    else the converge stage, else the main one."""
    for recipe in (_guided_recipe(checkpoint), _real_recipe(checkpoint), _converge_recipe(checkpoint)):
        if recipe.exists():
            return recipe
    return _main_recipe(checkpoint)


def _main_recipe(checkpoint: Path) -> Path:
    variant, scale = checkpoint.stem.rsplit("_x", 1)
    specific = ROOT / "weights" / "recipes" / f"{variant}_x{scale}.toml"
    return specific if specific.exists() else ROOT / "weights" / "recipes" / f"{variant}.toml"


def _resolved(checkpoint: Path, recipe: Path | None = None) -> dict:
    variant, scale = checkpoint.stem.rsplit("_x", 1)
    return resolve_config(variant, load_toml(recipe or _recipe(checkpoint)), scale=int(scale))


def _schedule_differences(card_config: dict, config: dict) -> dict:
    return {k: (card_config.get(k), config.get(k)) for k in SCHEDULE if card_config.get(k) != config.get(k)}


def test_every_variant_and_scale_is_shipped():
    assert {p.stem for p in SHIPPED} == {f"{v}_x{s}" for v in ("crossnet", "crossnetpp", "crossmpi", "refsrnet", "mdsr")
                                         for s in (4, 8)}


def _export_config(checkpoint: Path) -> dict:
    """The weight-free keys weights/train.sh has its export give ``checkpoint`` (its ``case`` tables of
    rematching steps and matched patch sides)."""
    variant, scale = checkpoint.stem.rsplit("_x", 1)
    script = (ROOT / "weights" / "train.sh").read_text()
    tables = script[script.index('case "${variant}_x${scale}" in\n'):script.index("\n$python weights/export.py")]
    out = subprocess.run(["bash", "-c", f'variant={variant}; scale={scale}; {tables}\n'
                                        'echo "${rematch[@]}"; echo "${patches[@]}"'],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    config = {}
    if out[0]:
        config["rematch"] = out[0].split()[1].split(",")
    if out[1]:
        config["matching_patch"] = [int(side) for side in out[1].split()[1].split(",")]
    return config


@pytest.mark.parametrize("checkpoint", SHIPPED, ids=lambda p: p.stem)
def test_recipe_builds_the_shipped_architecture(checkpoint):
    """The recipe's network, with the rematching steps and patch sides weights/train.sh exports it with."""
    config = _resolved(checkpoint)
    model = build_model(config["variant"], **{**model_kwargs(config), **_export_config(checkpoint)})
    assert model.config == read_checkpoint(checkpoint)["config"]


@pytest.mark.parametrize("checkpoint", SHIPPED, ids=lambda p: p.stem)
def test_card_records_the_recipe_schedule(checkpoint):
    config = _resolved(checkpoint)
    card = json.loads(checkpoint.with_suffix(".json").read_text())["train_config"]
    differing = _schedule_differences(card, config)
    assert not differing, f"{checkpoint.name}: card vs {_recipe(checkpoint).name}: {differing}"


@pytest.mark.parametrize("checkpoint", [p for p in SHIPPED if _converge_recipe(p).exists()], ids=lambda p: p.stem)
def test_converged_card_records_both_stages(checkpoint):
    """A converged checkpoint's card: the main recipe's schedule, then the converge stage's (after a flow
    pre-training stage where the variant has one), and the iterations of all of them."""
    card = json.loads(checkpoint.with_suffix(".json").read_text())
    # A real-pair stage, and after it a guided-matching stage, where the checkpoint has them, follow the
    # converge stage.
    later = _real_recipe(checkpoint).exists() + _guided_recipe(checkpoint).exists()
    main, converge = card["stages"][-2 - later:len(card["stages"]) - later]
    differing = _schedule_differences(main["train_config"], _resolved(checkpoint, _main_recipe(checkpoint)))
    assert not differing, f"{checkpoint.name}: first stage vs {_main_recipe(checkpoint).name}: {differing}"
    assert converge["train_config"]["plateau"]
    assert card["total_iterations"] == sum(stage["iterations"] for stage in card["stages"])


@pytest.mark.parametrize("checkpoint", [p for p in SHIPPED if _resolved(p, _main_recipe(p)).get("init")],
                         ids=lambda p: p.stem)
def test_recipe_init_is_a_compatible_shipped_checkpoint(checkpoint):
    """The main recipe's ``init`` (a converge stage starts from the main run's own best checkpoint)."""
    config = _resolved(checkpoint, _main_recipe(checkpoint))
    source = ROOT / config["init"]
    assert source.parent == ROOT / "weights" and source.is_file()
    # The same start as `weights/train.sh`: variant (or init_from mapping), configuration, every tensor.
    initialise(build_model(config["variant"], **model_kwargs(config)), {**config, "init": str(source)})


def test_the_shipped_checkpoints_are_found_where_they_ship(monkeypatch):
    """``refsr infer``/``bench`` look the shipped weights up by variant and scale in the repository's
    ``weights/`` folder — wherever the module doing the lookup sits inside the package."""
    from refsr_cli.archs.checkpoint import shipped_weights, weights_dir

    monkeypatch.delenv("REFSR_WEIGHTS", raising=False)
    assert weights_dir() == ROOT / "weights"
    assert len(SHIPPED) == 10
    for path in SHIPPED:
        variant, scale = path.stem.rsplit("_x", 1)
        assert shipped_weights(variant, int(scale)) == path
