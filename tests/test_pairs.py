"""Pair discovery: both folder layouts, CSV lists, missing partners, sharding."""
import numpy as np
import imageio.v3 as iio
import pytest

from refsr_cli.errors import RefsrError
from refsr_cli.data.pairs import discover_pairs, parse_shard, shard


def _png(path, h=8, w=12):
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.zeros((h, w, 3), np.uint8))
    return path


def test_flat_layout_with_optional_ground_truth(tmp_path):
    _png(tmp_path / "b_lr.png"), _png(tmp_path / "b_ref.JPG"), _png(tmp_path / "b_hr.tif")
    _png(tmp_path / "a_lr.png"), _png(tmp_path / "a_ref.png")
    _png(tmp_path / "c_lr.png")  # no partner → reported, not dropped
    (tmp_path / "readme.txt").write_text("ignored")
    pairs = {p.name: p for p in discover_pairs(tmp_path)}
    assert sorted(pairs) == ["a", "b", "c"]
    assert pairs["a"].hr is None and pairs["a"].problem is None
    assert pairs["b"].hr.name == "b_hr.tif" and pairs["b"].ref.name == "b_ref.JPG"
    assert [p.name for p in pairs.values() if p.problem] == ["c"]
    assert "no reference" in pairs["c"].problem


def test_subfolder_layout(tmp_path):
    for role in ("lr", "ref", "hr"):
        _png(tmp_path / role / "x.png")
    _png(tmp_path / "lr" / "y.png"), _png(tmp_path / "ref" / "y.png")
    _png(tmp_path / "ref" / "orphan.png")
    pairs = {p.name: p for p in discover_pairs(tmp_path)}
    assert pairs["x"].lr == tmp_path / "lr" / "x.png" and pairs["x"].hr == tmp_path / "hr" / "x.png"
    assert pairs["y"].hr is None and pairs["y"].problem is None
    assert "no LR image" in pairs["orphan"].problem


def test_csv_list_relative_paths_header_and_problems(tmp_path):
    _png(tmp_path / "imgs" / "p_lr.png"), _png(tmp_path / "imgs" / "p_ref.png"), _png(tmp_path / "gt" / "p.png")
    _png(tmp_path / "imgs" / "q.png"), _png(tmp_path / "imgs" / "q_view2.png")
    csv = tmp_path / "list.csv"
    csv.write_text("lr,ref,hr\n"
                   "imgs/p_lr.png,imgs/p_ref.png,gt/p.png\n"
                   "# a comment\n"
                   "imgs/q.png,imgs/q_view2.png\n"
                   "imgs/missing.png,imgs/q.png\n"
                   "only_one_column.png\n")
    pairs = discover_pairs(csv)
    by_name = {p.name: p for p in pairs}
    assert by_name["p"].hr == tmp_path / "gt" / "p.png" and by_name["p"].problem is None
    assert by_name["q"].hr is None and by_name["q"].problem is None
    assert "does not exist" in by_name["missing"].problem
    assert any(p.problem and "column" in p.problem for p in pairs)


def test_unusable_sources_raise(tmp_path):
    with pytest.raises(RefsrError, match="no such"):
        discover_pairs(tmp_path / "nope")
    with pytest.raises(RefsrError, match="no pairs"):
        discover_pairs(tmp_path)
    with pytest.raises(RefsrError, match="not one image"):
        discover_pairs(_png(tmp_path / "z_lr.png"))


def test_shards_partition_the_pairs(tmp_path):
    for i in range(11):
        _png(tmp_path / f"n{i:02d}_lr.png"), _png(tmp_path / f"n{i:02d}_ref.png")
    pairs = discover_pairs(tmp_path)
    parts = [shard(pairs, k, 3) for k in range(3)]
    names = [p.name for part in parts for p in part]
    assert sorted(names) == sorted(p.name for p in pairs) and len(names) == len(set(names))
    assert [len(part) for part in parts] == [4, 4, 3]
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)
