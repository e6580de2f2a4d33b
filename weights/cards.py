"""Add the figures `refsr bench` measured to the shipped model cards.

    python weights/cards.py refsr-report/report.json

For every `weights/<variant>_x<scale>.json`, the report's rows of that variant and scale (PSNR, SSIM,
IFC, seconds per image, per test set and view) are written into the card's "bench" field, together with
bicubic's and PatchMatch's rows at the same scale for reference.
"""
import json
import sys
from pathlib import Path

FIELDS = ("data", "view", "psnr", "psnr_std", "ssim", "ifc", "seconds", "parallax", "images")


def main(report_path: str) -> None:
    report = json.loads(Path(report_path).read_text())
    rows = report["results"]
    for card_path in sorted(Path(__file__).parent.glob("*_x*.json")):
        card = json.loads(card_path.read_text())
        variant, scale = card["variant"], card["scale"]

        def pick(method):
            return [{k: r.get(k) for k in FIELDS} for r in rows if r["method"] == method and r["scale"] == scale]

        card["bench"] = {"command": "refsr bench", "report": str(report_path),
                         "environment": report.get("environment", {}),
                         variant: pick(variant), "bicubic": pick("bicubic"), "patchmatch": pick("patchmatch")}
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        print(f"{card_path.name}: {len(card['bench'][variant])} rows")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "refsr-report/report.json")
