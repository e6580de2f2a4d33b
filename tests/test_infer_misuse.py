"""`refsr infer` / `refsr metrics` under misuse (issue 20): resume under other settings, a checkpoint of another
scale, kill -9 at random points, debris, unwritable --csv, unreadable images, output under a live bar."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import skimage.data
import torch
from click.testing import CliRunner

from refsr_cli.archs import build_model, spec
from refsr_cli.archs.checkpoint import save_checkpoint
from refsr_cli.cli import main
from refsr_cli.inference.methods import load_method
from refsr_cli.errors import RefsrError
from refsr_cli.ops.resize import downscale

SCALE = 4
REFSR = [sys.executable, "-m", "refsr_cli"]


def _write_pairs(folder: Path, count: int, size=(32, 48), hr=True, prefix="p"):
    """``count`` real LR/Ref(/HR) PNG pairs cut from the astronaut at ``size`` (HR px)."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    image = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float() / 255
    for i in range(count):
        y, x = (37 * i) % (512 - h - 2), (53 * i) % (512 - w - 2)
        crop = image[:, y:y + h, x:x + w]
        ref = image[:, y + 2:y + 2 + h, x + 1:x + 1 + w]
        # Without ground truth the LR needs only the right size (a plain crop is much faster to make).
        lr = downscale(crop[None], SCALE)[0] if hr else image[:, y:y + h // SCALE, x:x + w // SCALE]
        roles = {"lr": lr, "ref": ref, **({"hr": crop} if hr else {})}
        for role, t in roles.items():
            array = (t.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            iio.imwrite(folder / f"{prefix}{i}_{role}.png", array)


def _run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def _errors(result):
    return [line for line in result.stderr.splitlines() if line.startswith("refsr: error:")]


def _tiny_checkpoint(path: Path, variant: str, scale: int, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(path, build_model(variant, **spec(variant).tiny), scale)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# -- item 1: a resume under other settings is refused, never mixed or mislabelled -------------------------

def test_resume_with_other_settings_is_refused_and_overwrite_replaces_everything(tmp_path):
    pairs, out = tmp_path / "pairs", tmp_path / "sr"
    _write_pairs(pairs, 2)
    crossnet = _tiny_checkpoint(tmp_path / "cn.pt", "crossnet", SCALE)
    other = _tiny_checkpoint(tmp_path / "cn_other.pt", "crossnet", SCALE, seed=1)

    assert _run("infer", pairs, "--scale", SCALE, "--out", out, "--weights", crossnet).exit_code == 0
    first = _snapshot(out)
    assert json.loads((out / "settings.json").read_text())["method"] == "crossnet"

    # Another method, other weights of the same variant, --prealign: refused, naming what differs.
    for args, named in ((["--method", "bicubic"], "--method crossnet (this run: bicubic)"),
                        (["--weights", other], "--weights"),
                        (["--weights", crossnet, "--prealign"], "--prealign")):
        result = _run("infer", pairs, "--scale", SCALE, "--out", out, *args)
        assert result.exit_code == 1, (args, result.output)
        assert len(_errors(result)) == 1 and named in _errors(result)[0], result.stderr
        assert "--overwrite" in result.stderr and "another --out" in result.stderr
        assert _snapshot(out) == first, args                  # nothing touched, metrics.json still crossnet's

    # The same weights under another path resume (the digest is compared, not the path).
    moved = tmp_path / "moved.pt"
    moved.write_bytes(crossnet.read_bytes())
    result = _run("infer", pairs, "--scale", SCALE, "--out", out, "--weights", moved, "--json")
    assert result.exit_code == 0 and {json.loads(l)["status"] for l in result.stdout.splitlines()} == {"skipped"}

    # --overwrite replaces every output; metrics.json then says bicubic and holds bicubic's numbers.
    result = _run("infer", pairs, "--scale", SCALE, "--out", out, "--method", "bicubic", "--overwrite")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "bicubic" and metrics["settings"]["method"] == "bicubic"
    fresh = tmp_path / "fresh"
    assert _run("infer", pairs, "--scale", SCALE, "--out", fresh, "--method", "bicubic").exit_code == 0
    assert json.loads((fresh / "metrics.json").read_text())["pairs"] == metrics["pairs"]
    assert {n: b for n, b in _snapshot(out).items() if n.endswith("_sr.png")} == \
        {n: b for n, b in _snapshot(fresh).items() if n.endswith("_sr.png")}


def test_other_settings_never_mix_with_outputs_outside_the_run_or_of_unknown_origin(tmp_path):
    pairs, out = tmp_path / "pairs", tmp_path / "sr"
    _write_pairs(pairs, 4, hr=False)
    assert _run("infer", pairs, "--scale", SCALE, "--out", out, "--method", "bicubic", "--shard", "1/2").exit_code == 0
    before = _snapshot(out)
    # Shard 0 with another method, even with --overwrite: shard 1's bicubic outputs would stay beside it.
    result = _run("infer", pairs, "--scale", SCALE, "--out", out, "--method", "patchmatch", "--shard", "0/2",
                  "--overwrite")
    assert result.exit_code == 1 and "outside this run" in result.stderr and "p1_sr.png" in result.stderr
    assert _snapshot(out) == before

    # A record without outputs (a run about to write its first one) is refused too: that run may be
    # writing into the folder right now.
    started = tmp_path / "started"
    result = _run("infer", pairs, "--scale", SCALE, "--out", started, "--method", "bicubic", "--shard", "0/4")
    assert result.exit_code == 0
    (started / "p0_sr.png").unlink()
    result = _run("infer", pairs, "--scale", SCALE, "--out", started, "--method", "patchmatch")
    assert result.exit_code == 1 and "no output yet" in result.stderr and "--method bicubic" in result.stderr

    # Outputs with no record of their settings (an earlier refsr, files put there by hand): refused.
    (out / "settings.json").unlink()
    result = _run("infer", pairs, "--scale", SCALE, "--out", out, "--method", "bicubic", "--shard", "1/2")
    assert result.exit_code == 1 and "no record" in result.stderr and "--overwrite" in result.stderr
    result = _run("infer", pairs, "--scale", SCALE, "--out", out, "--method", "bicubic", "--shard", "1/2",
                  "--overwrite")
    assert result.exit_code == 0, result.output


# -- item 2: scale-specific layers only at the scale they were trained for --------------------------------

def test_checkpoint_of_another_scale_is_refused_where_it_has_per_scale_layers(tmp_path):
    pairs = tmp_path / "pairs"
    _write_pairs(pairs, 1, hr=False)
    mdsr8 = _tiny_checkpoint(tmp_path / "mdsr_x8.pt", "mdsr", 8)
    result = _run("infer", pairs, "--scale", 4, "--out", tmp_path / "o", "--weights", mdsr8)
    assert result.exit_code == 1 and len(_errors(result)) == 1, result.output
    assert str(mdsr8) in result.stderr and "×8" in result.stderr and "--scale 8" in result.stderr
    assert not list((tmp_path / "o").glob("*.png"))
    with pytest.raises(RefsrError, match="trained for ×8"):          # bench loads its methods the same way
        load_method("mdsr", 4, weights=mdsr8)
    # A network without per-scale layers runs at another scale with a warning, as before.
    cn8 = _tiny_checkpoint(tmp_path / "cn_x8.pt", "crossnet", 8)
    result = _run("infer", pairs, "--scale", 4, "--out", tmp_path / "o2", "--weights", cn8)
    assert result.exit_code == 0 and "trained for ×8, used at ×4" in result.stderr


# -- item 9 (infer) and the kill -9 loop -------------------------------------------------------------------

def test_debris_of_a_killed_run_is_removed_by_the_next(tmp_path):
    pairs, out = tmp_path / "pairs", tmp_path / "sr"
    _write_pairs(pairs, 2)
    out.mkdir()
    debris = [".p0_sr.k3j_x9a1.png.tmp", ".p1_flow.abcdefgh.npy.tmp", ".metrics.qwertyui.json.tmp",
              ".settings.zxcvbnm1.json.tmp", ".metrics.lock", ".refsr-probe.a1b2c3d4"]
    for name in debris:
        (out / name).write_bytes(b"half")
    (out / ".p10_sr.k3j_x9a2.png.tmp").write_bytes(b"x")   # p10 is not a pair of this run: left alone
    assert _run("infer", pairs, "--scale", SCALE, "--out", out, "--method", "bicubic").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == [".p10_sr.k3j_x9a2.png.tmp", "metrics.json", "p0_sr.png",
                                                     "p1_sr.png", "settings.json"]


def test_kill_9_at_random_points_then_rerun_equals_an_uninterrupted_run(tmp_path):
    pairs = tmp_path / "pairs"
    _write_pairs(pairs, 6, size=(384, 384), hr=False, prefix="big")   # writing these PNGs takes time
    _write_pairs(pairs, 2)                                             # these have ground truth → metrics.json
    args = ["infer", str(pairs), "--scale", str(SCALE), "--method", "bicubic"]
    reference, out = tmp_path / "reference", tmp_path / "sr"
    assert _run(*args, "--out", reference).exit_code == 0
    rng = random.Random(20)

    def wait_until(proc, ready):
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline and not ready():
            time.sleep(0.002)

    for attempt in range(3):
        before = set(os.listdir(out)) if out.exists() else set()
        proc = subprocess.Popen([*REFSR, "-q", *args, "--out", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Past the imports once the folder changes; then a random point of the loop, or in the middle of
        # writing a file (a temporary one exists), the moment that leaves debris.
        wait_until(proc, lambda: out.exists() and set(os.listdir(out)) != before)
        if attempt == 0:
            time.sleep(rng.uniform(0.0, 0.5))
        else:
            wait_until(proc, lambda: any(n.endswith(".tmp") for n in os.listdir(out)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _run(*args, "--out", out).exit_code == 0              # the resume
    assert _snapshot(out) == _snapshot(reference)               # same files, same bytes, no debris


# -- item 6 (metrics): an unwritable --csv fails before anything is computed -------------------------------

def test_metrics_csv_to_an_unwritable_path_fails_first(tmp_path):
    sr, gt = tmp_path / "sr", tmp_path / "gt"
    sr.mkdir()
    gt.mkdir()
    iio.imwrite(gt / "a.png", np.zeros((16, 16, 3), np.uint8))
    (sr / "a_sr.png").write_bytes(b"not yet readable")    # computing would fail on this one
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = _run("metrics", sr, gt, "--csv", blocker / "scores.csv")
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1, result.output
    assert str(blocker) in result.stderr and "scores.csv" in result.stderr and "cannot read" not in result.stderr


# -- smaller: unreadable images say what is wrong with them --------------------------------------------------

def test_empty_and_non_image_files_get_a_clear_message(tmp_path):
    pairs = tmp_path / "pairs"
    _write_pairs(pairs, 1, hr=False, prefix="empty")
    _write_pairs(pairs, 1, hr=False, prefix="text")
    (pairs / "empty0_lr.png").write_bytes(b"")
    (pairs / "text0_lr.png").write_text("this is a text file\n")
    result = _run("infer", pairs, "--scale", SCALE, "--out", tmp_path / "o", "--method", "bicubic", "--keep-going")
    assert result.exit_code == 1
    errors = "\n".join(_errors(result))
    assert len(_errors(result)) == 2
    assert re.search(r"empty0: \S*empty0_lr\.png: cannot read image: the file is empty \(0 bytes\)", errors), errors
    assert re.search(r"text0: \S*text0_lr\.png: cannot read image: not a PNG file", errors), errors
    assert "backend" not in errors and "stack" not in errors
    # A run that wrote nothing claims nothing: the corrected command may use other settings.
    assert not (tmp_path / "o" / "settings.json").exists()


# -- item 8: results printed through the console that draws the bar -----------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _in_terminal(argv: list[str], timeout: float = 60) -> str:
    """Run ``argv`` with stdout and stderr on one pseudo-terminal (as in an interactive shell); its output."""
    import pty
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            env={**os.environ, "COLUMNS": "100", "LINES": "40", "TERM": "xterm"})
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:        # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(master)
    return b"".join(chunks).decode(errors="replace")


def _screen_lines(raw: str) -> list[str]:
    """What each redrawn line starts with: the text between carriage returns / newlines, escapes removed."""
    return [ANSI.sub("", part).strip() for part in re.split(r"[\r\n]", raw)]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_infer_results_are_whole_lines_above_the_progress_bar(tmp_path):
    pairs = tmp_path / "pairs"
    _write_pairs(pairs, 3)
    raw = _in_terminal([*REFSR, "infer", str(pairs), "--scale", "4", "--out", str(tmp_path / "sr"),
                        "--method", "bicubic"])
    assert "━" in raw                                             # a live bar was drawn
    lines = _screen_lines(raw)
    for name in ("p0", "p1", "p2"):
        assert any(line.startswith(f"{name}: {tmp_path / 'sr' / name}_sr.png") for line in lines), raw
    assert any(line.startswith("mean of 3 pair(s):") for line in lines), raw


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_bench_pairs_shows_a_bar_while_it_reads_pairs_and_estimates_their_parallax(tmp_path):
    pairs = tmp_path / "pairs"
    _write_pairs(pairs, 2)
    raw = _in_terminal([*REFSR, "bench", "--pairs", str(pairs), "--methods", "bicubic", "--scales", "4",
                        "--jobs", "1", "--out", str(tmp_path / "report")])
    lines = _screen_lines(raw)
    assert any(line.startswith("×4 pairs pairs: reading") for line in lines), raw
    assert any(line.startswith("×4 pairs pairs: parallax") and "2/2" in line for line in lines), raw


def test_rerun_with_other_back_projection_or_reference_shift_is_refused(tmp_path):
    """The rounds of back-projection and a given reference shift change the pixels: they are settings."""
    _write_pairs(tmp_path / "pairs", 1)
    weights = _tiny_checkpoint(tmp_path / "cn.pt", "crossnet", SCALE)
    base = ["infer", tmp_path / "pairs", "--scale", SCALE, "--weights", weights, "--out", tmp_path / "sr"]
    assert _run(*base).exit_code == 0
    settings = json.loads((tmp_path / "sr" / "settings.json").read_text())
    assert settings["back_projection"] == 2
    for extra in (["--back-projection", "0"], ["--reference-shift", "3", "0"]):
        result = _run(*base, *extra)
        assert result.exit_code != 0 and "use another --out, or --overwrite" in result.output, result.output
    assert _run(*base, "--back-projection", "0", "--overwrite").exit_code == 0
    assert json.loads((tmp_path / "sr" / "settings.json").read_text())["back_projection"] == 0
