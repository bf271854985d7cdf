"""A per-layer λ bar chart as a small, dependency-free SVG (the model card shows it).

    svg = coefficient_chart_svg([0.5, 0.5, 1.0, 0.8], "Tiny-Llama-Chat: λ per layer")

The output is a pure function of the arguments, byte for byte: fixed-precision coordinates, no
timestamps, no random ids. Negative λ (subtracting the vector) draws below the zero line.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 640, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 40, 52  # margins around the plot area
MAX_X_LABELS = 16
BAR_COLOR, NEGATIVE_COLOR = "#4c78a8", "#e45756"


def coefficient_chart_svg(layer_values: list[float], title: str) -> str:
    """An SVG document: one bar per layer (layer index on x, λ on y), with value ticks and labels.

    Raises ValueError for an empty list or a value that is not a finite number.
    """
    values = [float(v) for v in layer_values]
    if not values:
        raise ValueError("coefficient_chart_svg needs at least one layer value")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"layer values must be finite numbers, got {layer_values!r}")

    ticks = _ticks(min(0.0, *values), max(0.0, *values))
    lo, hi = ticks[0], ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def y_of(v: float) -> float:
        return TOP + (hi - v) / (hi - lo) * plot_h

    step = plot_w / len(values)
    gap = min(2.0, step * 0.2)
    zero_y = y_of(0.0)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{WIDTH / 2:.2f}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    # Value axis: grid lines and tick labels.
    for t in ticks:
        y = y_of(t)
        out.append(f'<line x1="{LEFT}" y1="{y:.2f}" x2="{WIDTH - RIGHT}" y2="{y:.2f}" stroke="#dddddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.2f}" text-anchor="end">{_fmt(t)}</text>')
    # Bars, each with a tooltip.
    for i, v in enumerate(values):
        x = LEFT + i * step + gap / 2
        top, bottom = sorted((y_of(v), zero_y))
        color = NEGATIVE_COLOR if v < 0 else BAR_COLOR
        out.append(
            f'<rect x="{x:.2f}" y="{top:.2f}" width="{step - gap:.2f}" height="{bottom - top:.2f}" '
            f'fill="{color}"><title>layer {i}: λ = {_fmt(v)}</title></rect>'
        )
    # Layer axis: labels on at most MAX_X_LABELS evenly spaced layers (always the first and last).
    every = max(1, math.ceil(len(values) / MAX_X_LABELS))
    labelled = sorted(set(range(0, len(values), every)) | {len(values) - 1})
    if len(labelled) > 1 and labelled[-1] - labelled[-2] < every:
        labelled.pop(-2)  # keep the last label from colliding with its neighbour
    for i in labelled:
        x = LEFT + (i + 0.5) * step
        out.append(f'<text x="{x:.2f}" y="{TOP + plot_h + 16}" text-anchor="middle">{i}</text>')
    # Axes and their titles.
    out += [
        f'<line x1="{LEFT}" y1="{zero_y:.2f}" x2="{WIDTH - RIGHT}" y2="{zero_y:.2f}" stroke="#333333"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#333333"/>',
        f'<text x="{LEFT + plot_w / 2:.2f}" y="{HEIGHT - 12}" text-anchor="middle">layer</text>',
        f'<text x="16" y="{TOP + plot_h / 2:.2f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {TOP + plot_h / 2:.2f})">λ</text>',
        "</svg>",
    ]
    return "\n".join(out) + "\n"


def _ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 × 10^k apart) covering [lo, hi]; [0, 1] when the range is empty."""
    if hi - lo <= 0:
        lo, hi = (lo - 1, lo) if lo < 0 else (lo, lo + 1)
    raw = (hi - lo) / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def _fmt(v: float) -> str:
    """Short, stable number text: 0.5, 1.0, 0.25, -0.1 (six significant digits at most)."""
    text = f"{v:.6g}"
    if text == "-0":
        text = "0"
    return text + ".0" if text.lstrip("-").isdigit() else text
