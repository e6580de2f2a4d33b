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


def flip_chunk_bytes(store, index: int, row: int, col: int) -> None:
    """Corrupt view ``(row, col)`` of light field ``index`` of a store: flip 16 bytes inside its compressed chunk."""
    import h5py

    with h5py.File(store, "r") as h5:
        info = h5["views"].id.get_chunk_info_by_coord((index, row, col, 0, 0, 0))
    with open(store, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        chunk = fh.read(16)
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes(b ^ 0xFF for b in chunk))


@pytest.fixture
def corrupt_view():
    """:func:`flip_chunk_bytes`, for tests of unreadable store data."""
    return flip_chunk_bytes
