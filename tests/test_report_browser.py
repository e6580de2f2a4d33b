"""``report.html`` in a real browser: headless Chromium renders it, screenshots it, and the page is checked for
console messages, the headline, images that load, and a zoom that opens, steps and shows the difference.

Chromium (150) writes every console message, whatever its level, to its log as ``INFO:CONSOLE``: a
``console.error`` cannot be told from a ``console.log`` there. The report logs nothing, so any console line
counts as an error — :func:`test_the_console_check_catches_errors` proves the check sees both a
``console.error`` and an uncaught exception. What the page did is read back through ``--dump-dom``: a probe
script, added to a copy of the page, writes its findings into attributes of ``<html>``.

Also the command that makes the documentation's screenshot (docs/bench.md)::

    python -m tests.test_report_browser --screenshot docs/img/bench-report.png REPORT_DIR
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SKIP_REASON = ("no Chromium on this machine (and none could be installed): the report was not checked in a browser; "
               "`apt-get install -y chromium` (.ci/run does it as root) enables this test")
WINDOW = (1400, 1300)

# After load: how many images have a source and how many of them did not decode; then the zoom driven as a
# reader would — click the first crop, → to the next, Esc; open a method's crop, D for its difference, D, Esc.
PROBE = """<script>
addEventListener('load', () => {
  const root = document.documentElement, found = root.dataset;
  const images = [...document.images].filter(i => i.getAttribute('src'));
  found.images = images.length;
  found.broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  found.headlineRows = document.querySelectorAll('#headline tbody tr').length;
  const box = document.getElementById('zoom'), figures = document.querySelectorAll('.row figure');
  if (!box || figures.length < 3) return;
  const big = box.querySelector('img'), key = k => document.dispatchEvent(new KeyboardEvent('keydown', {key: k}));
  figures[0].click();
  found.zoomOpens = !box.hidden && big.src === figures[0].querySelector('img.pic').src && big.naturalWidth > 0;
  key('ArrowRight');
  found.zoomSteps = big.src === figures[1].querySelector('img.pic').src;
  key('Escape');
  found.zoomCloses = box.hidden;
  const method = [...figures].find(f => f.querySelector('img.dif'));
  method.click();
  key('d');
  found.zoomDiff = big.src === method.querySelector('img.dif').src;
  key('d');
  key('Escape');
});
</script>"""


def find_browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def render(page: Path, screenshot: Path, window: tuple[int, int] = WINDOW, probe: str = PROBE) -> dict:
    """Open a probed copy of ``page`` in headless Chromium; returns ``{"attributes": {name: value} of <html>
    after the probe, "console": [message, …]}`` and writes the viewport's screenshot (PNG) to ``screenshot``."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / page.name
        text = page.read_text(encoding="utf-8")
        copy.write_text(text.replace("</body>", probe + "</body>", 1), encoding="utf-8")
        run = subprocess.run(
            [find_browser(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp}/profile", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=3000",            # the load handlers run before the DOM is dumped
             f"--window-size={window[0]},{window[1]}", f"--screenshot={screenshot}", "--dump-dom",
             copy.as_uri()], capture_output=True, text=True, timeout=60)
    head = re.search(r"<html([^>]*)>", run.stdout)
    attributes = dict(re.findall(r'data-([\w-]+)="([^"]*)"', head.group(1))) if head else {}
    console = re.findall(r":CONSOLE[^\]]*\] (.*)", run.stderr)
    return {"attributes": attributes, "console": console, "returncode": run.returncode}


def problems(found: dict) -> list[str]:
    """What a reader would see go wrong; empty when the page is sound."""
    a = found["attributes"]
    out = [f"console: {line}" for line in found["console"]]
    if found["returncode"] != 0:
        out.append(f"chromium exited with {found['returncode']}")
    if not a:
        out.append("the page's DOM could not be read back")
        return out
    if int(a.get("headline-rows", 0)) < 1:
        out.append("no headline row")
    if int(a.get("images", 0)) < 1 or int(a.get("broken", 1)) != 0:
        out.append(f"{a.get('broken')} of {a.get('images')} images did not load")
    for step in ("zoom-opens", "zoom-steps", "zoom-closes", "zoom-diff"):
        if a.get(step) != "true":
            out.append(f"{step}: {a.get(step)}")
    return out


def small_png(shot: Path, out: Path) -> Path:
    """The screenshot as a 256-colour optimised PNG (text and flat plots lose nothing visible)."""
    from PIL import Image

    with Image.open(shot) as image:
        image.convert("RGB").quantize(256).save(out, optimize=True)
    return out


# ------------------------------------------------------------------------------------------------ tests

@pytest.fixture(scope="module")
def report_page(tmp_path_factory):
    if find_browser() is None:
        pytest.skip(SKIP_REASON)
    from test_report import tiny_reports

    store, _ = tiny_reports(tmp_path_factory.mktemp("browser"))
    return store / "report.html"


def test_report_renders_without_errors_with_headline_images_and_zoom(report_page, tmp_path):
    shot = tmp_path / "report.png"
    found = render(report_page, shot)
    assert problems(found) == [], found
    assert int(found["attributes"]["images"]) >= 2 * 7           # 2 cases × (LR, GT, 5 methods, Ref …)
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == WINDOW
        assert len(image.convert("L").getcolors(1 << 16)) > 20    # something was drawn, not a blank page


def test_the_console_check_catches_errors(report_page, tmp_path):
    failing = PROBE + "<script>console.error('deliberate error');</script><script>notAFunction();</script>"
    found = render(report_page, tmp_path / "bad.png", probe=failing)
    said = " ".join(problems(found))
    assert "deliberate error" in said and "Uncaught ReferenceError: notAFunction is not defined" in said


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Check REPORT_DIR/report.html in headless Chromium; with "
                                                 "--screenshot, save the top of the page as an optimised PNG.")
    parser.add_argument("report_dir", type=Path)
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args(argv)
    if find_browser() is None:
        print(SKIP_REASON, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "shot.png"
        found = render(args.report_dir / "report.html", shot)
        if args.screenshot is not None:
            small_png(shot, args.screenshot)
            print(f"{args.screenshot}: {args.screenshot.stat().st_size // 1024} kB, {WINDOW[0]}×{WINDOW[1]}")
    for line in problems(found) or [f"ok: {found['attributes']}"]:
        print(line)
    return 1 if problems(found) else 0


if __name__ == "__main__":
    sys.exit(main())
