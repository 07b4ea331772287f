#!/usr/bin/env python3
"""Render a report's index.html in headless Chromium to a PNG and check that it shows something.

    python tests/render_report.py REPORT_DIR [--out SCREENSHOT.png] [--height 3000]

Exit 0 when the screenshot has text and the plots' colour in it; 1 when it looks blank (or the
images did not load); 2 when Chromium is missing or fails. Debian: apt-get install chromium.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MIN_INK = 0.01  # share of pixels darker than light grey: text, axes, tables
MIN_COLOUR = 0.002  # share of saturated pixels: only the plots have colour on the page


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(index_html: Path, out_png: Path, chromium: str | None = None, size=(1200, 3000),
               timeout: float = 120) -> Path:
    """Render a page in headless Chromium to a PNG; raises RuntimeError with Chromium's words if it fails."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise RuntimeError("no Chromium found (Debian: apt-get install chromium)")
    out_png = Path(out_png).resolve()
    out_png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out_png}",
               f"--window-size={size[0]},{size[1]}", Path(index_html).resolve().as_uri()]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not out_png.exists():
        raise RuntimeError(f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-800:]}")
    return out_png


def screenshot_stats(png: Path) -> dict:
    """How much of a screenshot is ink and how much is colour (the plots are the only colour on the page)."""
    from PIL import Image

    with Image.open(png) as im:
        rgb = im.convert("RGB")
        width, height = rgb.size
        small = rgb.resize((max(1, width // 2), max(1, height // 2)))
    pixels = list(getattr(small, "get_flattened_data", small.getdata)())  # getdata: Pillow before 12
    ink = sum(1 for r, g, b in pixels if min(r, g, b) < 200)
    colour = sum(1 for r, g, b in pixels if max(r, g, b) - min(r, g, b) > 60)
    return {"width": width, "height": height, "ink": ink / len(pixels), "colour": colour / len(pixels)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path, help="report folder (with index.html) or the index.html itself")
    p.add_argument("--out", type=Path, help="screenshot path (default: REPORT_DIR/../<name>-screenshot.png)")
    p.add_argument("--width", type=int, default=1200)
    p.add_argument("--height", type=int, default=3000)
    p.add_argument("--chromium", help="Chromium binary (default: chromium on PATH)")
    args = p.parse_args(argv)
    index = args.report / "index.html" if args.report.is_dir() else args.report
    if not index.exists():
        print(f"render_report: {index} does not exist", file=sys.stderr)
        return 2
    out = args.out or index.parent.parent / f"{index.parent.name}-screenshot.png"
    chromium = args.chromium or find_chromium()
    if chromium is None:
        print("render_report: no Chromium found (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    try:
        screenshot(index, out, chromium=chromium, size=(args.width, args.height))
    except (RuntimeError, OSError) as e:
        print(f"render_report: {e}", file=sys.stderr)
        return 2
    stats = screenshot_stats(out)
    ok = stats["ink"] >= MIN_INK and stats["colour"] >= MIN_COLOUR
    print(json.dumps({"screenshot": str(out), **stats, "ok": ok}))
    if not ok:
        print(f"render_report: {out} looks blank or without plots (ink {stats['ink']:.4f} < {MIN_INK} "
              f"or colour {stats['colour']:.4f} < {MIN_COLOUR})", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
