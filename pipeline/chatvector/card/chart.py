"""Small, dependency-free SVG charts for the model card: the per-layer λ bars, and a sweep's scores against λ.

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
    out = _open_svg(title)
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


def _open_svg(title: str) -> list[str]:
    """The lines every chart starts with: the root element, its title (also shown on top), a white page."""
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{WIDTH / 2:.2f}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]


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


SERIES_COLORS = ("#4c78a8", "#f58518", "#54a24b")  # fidelity, format health, a third score
CHOSEN_COLOR = "#e45756"


def sweep_chart_svg(factors: list[float], series: dict[str, list[float]], chosen: float | None, title: str) -> str:
    """An SVG line chart of scores in [0, 1] (one line per entry of `series`, one point per factor) against
    the λ factor, the chosen factor marked by a vertical line. Byte-stable like the λ chart.

    Raises ValueError for no factors, a series of another length, or a score outside [0, 1]."""
    xs = [float(f) for f in factors]
    if not xs or not all(math.isfinite(x) for x in xs):
        raise ValueError(f"sweep_chart_svg needs finite factors, got {factors!r}")
    if len(series) > len(SERIES_COLORS):
        raise ValueError(f"at most {len(SERIES_COLORS)} series, got {len(series)}")
    for name, ys in series.items():
        if len(ys) != len(xs) or not all(0.0 <= float(y) <= 1.0 for y in ys):
            raise ValueError(f"series {name!r}: one score in [0, 1] per factor, got {ys!r}")
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM - 18  # room for the legend below
    x_ticks = _ticks(min(xs), max(xs))
    lo, hi = (x_ticks[0], x_ticks[-1]) if len(set(xs)) > 1 else (min(xs) - 0.5, max(xs) + 0.5)

    def x_of(v: float) -> float:
        return LEFT + (v - lo) / (hi - lo) * plot_w

    def y_of(v: float) -> float:
        return TOP + (1.0 - v) * plot_h

    out = _open_svg(title)
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = y_of(t)
        out.append(f'<line x1="{LEFT}" y1="{y:.2f}" x2="{WIDTH - RIGHT}" y2="{y:.2f}" stroke="#dddddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.2f}" text-anchor="end">{_fmt(t)}</text>')
    for t in (x_ticks if len(set(xs)) > 1 else xs):
        out.append(f'<text x="{x_of(t):.2f}" y="{TOP + plot_h + 16}" text-anchor="middle">{_fmt(t)}</text>')
    if chosen is not None:
        x = x_of(float(chosen))
        out.append(f'<line x1="{x:.2f}" y1="{TOP}" x2="{x:.2f}" y2="{TOP + plot_h}" stroke="{CHOSEN_COLOR}" '
                   f'stroke-dasharray="4 3"><title>chosen: λ × {_fmt(float(chosen))}</title></line>')
        out.append(f'<text x="{x + 4:.2f}" y="{TOP + 12}" fill="{CHOSEN_COLOR}">chosen ×{_fmt(float(chosen))}</text>')
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    for (name, ys), color in zip(series.items(), SERIES_COLORS):
        points = " ".join(f"{x_of(xs[i]):.2f},{y_of(float(ys[i])):.2f}" for i in order)
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
        for i in order:
            out.append(f'<circle cx="{x_of(xs[i]):.2f}" cy="{y_of(float(ys[i])):.2f}" r="3.5" fill="{color}">'
                       f"<title>{escape(name)} at λ × {_fmt(xs[i])}: {_fmt(round(float(ys[i]), 3))}</title></circle>")
    legend_y = HEIGHT - 10
    for k, ((name, _), color) in enumerate(zip(series.items(), SERIES_COLORS)):
        x = LEFT + k * 180
        out.append(f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{x + 14}" y="{legend_y}">{escape(name)}</text>')
    out += [
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" stroke="#333333"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#333333"/>',
        f'<text x="{LEFT + plot_w / 2:.2f}" y="{TOP + plot_h + 32}" text-anchor="middle">λ factor (× the recipe\'s '
        "schedule)</text>",
        "</svg>",
    ]
    return "\n".join(out) + "\n"
