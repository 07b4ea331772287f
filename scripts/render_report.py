#!/usr/bin/env python3
"""Render a report's index.html in headless Chromium to a PNG and check that it shows something.

    python scripts/render_report.py REPORT_DIR [--out SCREENSHOT.png] [--height 3000]

Exit 0 when the screenshot has text and the plots' colour in it; 1 when it looks blank (or the
images did not load); 2 when Chromium is missing or fails. Debian: apt-get install chromium.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search.report import find_chromium, screenshot, screenshot_stats  # noqa: E402

MIN_INK = 0.01  # share of pixels darker than light grey: text, axes, tables
MIN_COLOUR = 0.002  # share of saturated pixels: only the plots have colour on the page


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
