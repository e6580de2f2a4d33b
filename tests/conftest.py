"""Shared fixtures: small real stores built with the project's own prepare code (no mocks)."""
import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_lf_store(tmp_path_factory):
    """A real synthetic light-field store: 3 train + 2 test light fields of 64×96, disparity ≤ 4 px."""
    from refsr_cli.prepare.pipeline import prepare_synthetic

    out = tmp_path_factory.mktemp("tiny-store")
    prepare_synthetic(out, count=3, test_count=2, seed=0, height=64, width=96, max_disparity=4.0, jobs=1)
    return out
