"""Starting a run from another checkpoint's weights (``--init``): the same variant, or one the
architecture names in its ``init_from`` table, with a configuration that matches but for weight-free keys."""
from __future__ import annotations

import torch.nn as nn

from refsr_cli.archs import GUIDED_MATCHING, MATCHING_PATCH, REFERENCE_MATCHING, REMATCH
from refsr_cli.archs.checkpoint import load_model
from refsr_cli.errors import RefsrError


def initialise(model: nn.Module, config: dict) -> None:
    """Start from the weights of checkpoint ``config["init"]``: the same variant, or one the architecture
    names in its ``init_from`` table (e.g. CrossNet++ from CrossNet), with the same configuration but for
    the keys the architecture names in ``weight_free_config``."""
    source, payload = load_model(config["init"])
    same = payload["variant"] == config["variant"]
    rename = {} if same else getattr(model, "init_from", {}).get(payload["variant"])
    if rename is None:
        raise RefsrError(f"{config['init']}: a {payload['variant']} checkpoint cannot initialise {config['variant']}")
    # Compare configurations, not only tensor shapes: flow_scale, sisr or global_residual change what the
    # same weights mean. Keys the architecture lists as weight-free (RefSR-Net's search window) may differ.
    # A network starts from raw-reference weights when it learns to take a matched reference (or a
    # guided one).
    free = set(getattr(model, "weight_free_config", ())) | {REFERENCE_MATCHING, GUIDED_MATCHING, MATCHING_PATCH,
                                                           REMATCH}
    if _without(source.config, free) != _without(model.config, free):
        raise RefsrError(f"{config['init']}: its configuration {source.config} does not match this run's "
                         f"{model.config}")
    model.load_state_dict(renamed_state(source.state_dict(), model.state_dict().keys(), rename))


def _without(config: dict, keys: set) -> dict:
    return {k: v for k, v in config.items() if k not in keys}


def renamed_state(source: dict, target_keys, rename: dict[str, str]) -> dict:
    """The target's state dict filled from ``source``: a target key under module ``t`` of ``rename``
    (``{target module: source module}``) reads the same key under the source module, every other key
    reads itself. Every target key must be found (``load_state_dict`` then checks the shapes)."""
    state = {}
    for key in target_keys:
        module, _, rest = key.partition(".")
        source_key = f"{rename[module]}.{rest}" if module in rename else key
        if source_key not in source:
            raise RefsrError(f"initialisation: {key} has no counterpart ({source_key}) in the source checkpoint")
        state[key] = source[source_key]
    return state
