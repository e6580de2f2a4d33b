"""The report's side-by-side crops: one aligned row per case, a difference-to-GT view, click to zoom.

Everything is inside the page: crops and their differences are base64 PNG ``data:`` URIs, the
difference view is a CSS checkbox toggle, and zooming is a few lines of inline JavaScript (an overlay
that shows one crop large; ← → step along the case's row, D toggles the difference, Esc closes).
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from refsr_cli.data.image_io import encode_png, read_array, to_uint8
from refsr_cli.errors import RefsrError

DIFF_GAIN = 4           # |crop − GT| is small: ×4 makes a 1/64 error (4 grey levels) visible as 16
DIFF_LEVELS = 16        # shown in 16 greys (steps of 4 grey levels of error): a third of the bytes of 256
TILE_PX = 256           # on-screen side of a crop: the 128-px crops shown at exactly 2×

CSS = f"""
.wide{{width:calc(100vw - 40px);margin-left:calc(50% - 50vw + 20px)}}
.case h3{{font-size:.95em;margin:1.1em 0 .3em}}
.row{{display:grid;grid-auto-flow:column;grid-auto-columns:{TILE_PX}px;gap:8px;overflow-x:auto;padding-bottom:4px}}
.row figure{{margin:0;text-align:center;font-size:.8em;cursor:zoom-in}}
.row img{{width:{TILE_PX}px;height:{TILE_PX}px;image-rendering:pixelated;border:1px solid #ccc;display:block}}
.row img.dif,#diffview:checked~.case img.pic.has-dif{{display:none}}
#diffview:checked~.case img.dif{{display:block}}
.toggle{{font-size:.9em;margin:.4em 0;display:inline-block}}
#zoom{{position:fixed;inset:0;background:rgba(20,20,20,.92);display:flex;flex-direction:column;
align-items:center;justify-content:center;color:#eee;z-index:10;cursor:zoom-out}}
#zoom[hidden]{{display:none}}
#zoom img{{width:min(92vw,82vh);height:min(92vw,82vh);image-rendering:pixelated;background:#000}}
#zoom figure{{margin:0;text-align:center}}#zoom figcaption{{margin-top:.5em}}#zoom .zh{{font-size:.8em;color:#aaa}}
"""

JS = """
(() => {
  const box = document.getElementById('zoom'), big = box.querySelector('img');
  const cap = box.querySelector('figcaption');
  const diff = document.getElementById('diffview');
  let row = [], at = 0;
  function show() {
    const fig = row[at], dif = fig.querySelector('img.dif');
    const src = diff.checked && dif ? dif : fig.querySelector('img.pic');
    big.src = src.src;
    big.alt = src.alt;
    const note = src === dif ? ' · |crop − GT| ×""" + str(DIFF_GAIN) + """' : '';
    cap.innerHTML = fig.querySelector('figcaption').innerHTML + note;
  }
  document.querySelectorAll('.row figure').forEach(fig => fig.addEventListener('click', () => {
    row = [...fig.parentElement.children];
    at = row.indexOf(fig);
    show();
    box.hidden = false;
  }));
  box.addEventListener('click', () => { box.hidden = true; });
  document.addEventListener('keydown', e => {
    if (box.hidden) return;
    if (e.key === 'Escape') box.hidden = true;
    else if (e.key === 'ArrowRight') { at = (at + 1) % row.length; show(); }
    else if (e.key === 'ArrowLeft') { at = (at + row.length - 1) % row.length; show(); }
    else if (e.key === 'd' || e.key === 'D') { diff.checked = !diff.checked; show(); }
    else return;
    e.preventDefault();
  });
})();
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _read(path: Path) -> np.ndarray | None:
    """A crop as ``H×W×3`` uint8, or ``None`` when it is missing or unreadable (the page then leaves it out)."""
    try:
        return to_uint8(read_array(path))
    except (OSError, RefsrError):
        return None


def difference(crop: np.ndarray, gt: np.ndarray, gain: int = DIFF_GAIN) -> np.ndarray:
    """``H×W`` uint8 grey of ``gain · mean_RGB |crop − gt|`` (``H×W×3`` uint8 each) in :data:`DIFF_LEVELS`
    steps from black (identical) to white (off by ``256 / gain`` grey levels or more)."""
    error = np.abs(crop.astype(np.int16) - gt.astype(np.int16)).mean(axis=2) * gain
    step = 256 // DIFF_LEVELS
    level = np.minimum(error // step, DIFF_LEVELS - 1)
    return (level * (255 // (DIFF_LEVELS - 1))).astype(np.uint8)


def _figure(tile: dict, base: Path, gt: np.ndarray | None) -> str:
    esc = html.escape
    path = base / tile["file"]
    try:
        png = path.read_bytes()
    except OSError:
        return ""
    label = esc(str(tile["label"]))
    caption = label + (f"<br>{tile['psnr']:.2f} dB" if tile.get("psnr") is not None else "")
    dif = None
    if gt is not None and tile["label"] != "GT":
        crop = _read(path)
        dif = encode_png(difference(crop, gt)) if crop is not None and crop.shape == gt.shape else None
    images = f'<img class="pic{" has-dif" if dif else ""}" alt="{label}" src="{data_uri(png)}">'
    if dif:
        images += f'<img class="dif" alt="{label}: |crop − GT| ×{DIFF_GAIN}" src="{data_uri(dif)}">'
    return f"<figure>{images}<figcaption>{caption}</figcaption></figure>"


def _title(item: dict) -> str:
    esc = html.escape
    y, x, side = item["region"]
    parallax = item.get("parallax")
    return (f"×{item['scale']} · {esc(str(item['data']))} {esc(str(item['view_label']))} · {esc(str(item['image']))}"
            f" · region ({x}, {y}) {side}×{side}{f' · parallax {parallax:.1f} px' if parallax is not None else ''}")


def showcase_html(showcase: list[dict], base: str | Path) -> str:
    """The crops section; ``base`` is the report folder the tiles' files are relative to."""
    base = Path(base)
    out = ['<section class="wide"><h2>Side by side</h2>',
           f'<p class="meta">The same region of the first image of each test group (the most textured window '
           f'of the ground truth), {TILE_PX} px on screen, without smoothing; PSNR under a method is that of the '
           f'whole image. Click a crop to zoom (← → move along its row, D difference, Esc closes); a row wider '
           f'than the window scrolls sideways. The difference view shows |crop − GT| averaged over RGB, '
           f'×{DIFF_GAIN}, in {DIFF_LEVELS} greys: black = identical, white = off by a quarter of the range or '
           f'more.</p>',
           '<input type="checkbox" id="diffview"><label for="diffview" class="toggle"> show the difference to '
           'GT</label>']
    for item in showcase:
        gt_tile = next((t for t in item["tiles"] if t["label"] == "GT"), None)
        gt = _read(base / gt_tile["file"]) if gt_tile else None
        figures = "".join(_figure(tile, base, gt) for tile in item["tiles"])
        out.append(f'<div class="case"><h3>{_title(item)}</h3><div class="row">{figures}</div></div>')
    out.append('</section><div id="zoom" hidden><figure><img alt=""><figcaption></figcaption></figure>'
               '<p class="zh">← → other crops of this case · D difference to GT · Esc or click to close</p></div>'
               f"<script>{JS}</script>")
    return "\n".join(out)
