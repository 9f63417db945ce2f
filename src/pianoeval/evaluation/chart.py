"""The chart of one scored performance, drawn with Pillow: 19 dimensions, the performance's score with its
fold spread over the training labels' 10-90 % range.

`pianoeval score` draws one chart per call, and matplotlib's import and first draw took 0.6-0.8 s of a
MIDI's 2.5 s (its import builds the docstrings of every artist class); Pillow (a matplotlib dependency)
draws the same chart in a few milliseconds. The pipeline's reports, which draw many plots once per run,
keep matplotlib (`evaluation/report.py`).
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 990, 880  # pixels of the PNG (9 x 8 inches at 110 dpi, as the matplotlib version was)
SCALE = 2  # drawn at twice the size, then downsampled: smooth lines without antialiasing primitives
MARGINS = {"right": 30, "top": 64, "bottom": 70}  # the left one fits the longest label
GREY, BLUE, INK, GRID = (217, 217, 217), (31, 119, 180), (34, 34, 34), (235, 235, 235)


def _font(size: int):  # -> PIL.ImageFont.FreeTypeFont
    """DejaVu Sans at `size` px: the copy matplotlib ships (found without importing matplotlib), else
    Pillow's built-in font."""
    from PIL import ImageFont

    spec = importlib.util.find_spec("matplotlib")
    if spec and spec.origin:
        ttf = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if ttf.is_file():
            return ImageFont.truetype(str(ttf), size)
    return ImageFont.load_default(size)


def score_chart_png(
    mean: np.ndarray,
    std: np.ndarray,
    reference: np.ndarray,
    labels: list[str],
    title: str,
    x_range: tuple[float, float],
) -> bytes:
    """PNG bytes: per row, the training 10-90 % range of `reference` [N, D] (grey), and `mean` ± `std` [D]."""
    from PIL import Image, ImageDraw

    s = SCALE
    image = Image.new("RGB", (WIDTH * s, HEIGHT * s), "white")
    draw = ImageDraw.Draw(image)
    small, normal = _font(11 * s), _font(13 * s)
    left = max(small.getlength(label) for label in labels) + 20 * s
    right = (WIDTH - MARGINS["right"]) * s
    top, bottom = MARGINS["top"] * s, (HEIGHT - MARGINS["bottom"]) * s
    lo_x, hi_x = x_range

    def x_of(value: float) -> float:
        return left + (float(np.clip(value, lo_x, hi_x)) - lo_x) / (hi_x - lo_x) * (right - left)

    for tick in np.arange(0.2, hi_x + 1e-9, 0.2):
        x = x_of(tick)
        draw.line([(x, top), (x, bottom)], fill=GRID, width=s)
        draw.text((x, bottom + 6 * s), f"{tick:.1f}", fill=INK, font=small, anchor="mt")
    row = (bottom - top) / len(labels)
    lo, hi = np.percentile(reference, 10, axis=0), np.percentile(reference, 90, axis=0)
    for i, label in enumerate(labels):
        y = top + (i + 0.5) * row
        draw.rectangle([(x_of(lo[i]), y - 0.4 * row), (x_of(hi[i]), y + 0.4 * row)], fill=GREY)
        a, b = x_of(mean[i] - std[i]), x_of(mean[i] + std[i])
        draw.line([(a, y), (b, y)], fill=BLUE, width=2 * s)
        for end in (a, b):
            draw.line([(end, y - 0.2 * row), (end, y + 0.2 * row)], fill=BLUE, width=2 * s)
        r = 4 * s
        draw.ellipse([(x_of(mean[i]) - r, y - r), (x_of(mean[i]) + r, y + r)], fill=BLUE)
        draw.text((left - 8 * s, y), label, fill=INK, font=small, anchor="rm")
    draw.rectangle([(left, top), (right, bottom)], outline=INK, width=s)
    draw.text(((left + right) / 2, bottom + 30 * s), "score (rating / 7)", fill=INK, font=normal, anchor="mt")
    draw.text((left, top - 32 * s), title, fill=INK, font=normal, anchor="lm")
    _legend(draw, right - 242 * s, 6 * s, small)
    out = io.BytesIO()
    # The mean of each s x s block (what supersampling means; LANCZOS took 0.065 s of a 0.3 s MIDI score), and
    # zlib's fastest level: 0.04 s less to encode for a larger file.
    image.reduce(s).save(out, format="PNG", optimize=False, compress_level=1)
    return out.getvalue()


def _legend(draw, x: float, y: float, font) -> None:  # PIL.ImageDraw.ImageDraw, PIL font
    """The two entries of the chart's legend (in the top margin), top-left corner at (x, y)."""
    s = SCALE
    draw.rectangle([(x + 8 * s, y + 8 * s), (x + 30 * s, y + 18 * s)], fill=GREY)
    draw.text((x + 38 * s, y + 13 * s), "training 10-90%", fill=INK, font=font, anchor="lm")
    cy = y + 32 * s
    draw.line([(x + 8 * s, cy), (x + 30 * s, cy)], fill=BLUE, width=2 * s)
    draw.ellipse([(x + 15 * s, cy - 4 * s), (x + 23 * s, cy + 4 * s)], fill=BLUE)
    draw.text((x + 38 * s, cy), "this performance (± fold spread)", fill=INK, font=font, anchor="lm")
