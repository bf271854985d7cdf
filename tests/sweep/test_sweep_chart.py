"""The sweep chart: scores in [0, 1] against the λ factor, one line per score, the chosen factor marked."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from chatvector.card.chart import sweep_chart_svg

NS = "{http://www.w3.org/2000/svg}"


def test_one_point_per_factor_per_series_with_the_chosen_factor_marked():
    svg = sweep_chart_svg([1.0, 0.5, 0.7], {"fidelity": [0.2, 1.0, 0.9], "format": [1.0, 1.0, 1.0]}, 0.7,
                          "x: fidelity and format against λ")
    root = ET.fromstring(svg)
    points = [c.find(f"{NS}title").text for c in root.iter(f"{NS}circle")]
    assert points == ["fidelity at λ × 0.5: 1.0", "fidelity at λ × 0.7: 0.9", "fidelity at λ × 1.0: 0.2",
                      "format at λ × 0.5: 1.0", "format at λ × 0.7: 1.0", "format at λ × 1.0: 1.0"]
    lines = [p.get("points").split() for p in root.iter(f"{NS}polyline")]
    assert len(lines) == 2 and all(len(line) == 3 for line in lines)
    xs = [float(p.split(",")[0]) for p in lines[0]]
    assert xs == sorted(xs)  # drawn left to right whatever the order given
    ys = [float(p.split(",")[1]) for p in lines[0]]
    assert ys[0] < ys[1] < ys[2]  # fidelity falls as λ grows (y grows downwards)
    chosen = [e for e in root.iter(f"{NS}line") if e.find(f"{NS}title") is not None]
    assert [e.find(f"{NS}title").text for e in chosen] == ["chosen: λ × 0.7"]
    assert float(chosen[0].get("x1")) == xs[1]
    assert {"fidelity", "format", "chosen ×0.7"} <= {t.text for t in root.iter(f"{NS}text")}
    assert svg == sweep_chart_svg([1.0, 0.5, 0.7], {"fidelity": [0.2, 1.0, 0.9], "format": [1.0, 1.0, 1.0]}, 0.7,
                                  "x: fidelity and format against λ")


def test_a_single_factor_and_no_choice_still_draw():
    root = ET.fromstring(sweep_chart_svg([1.0], {"fidelity": [0.5]}, None, "one"))
    assert len(list(root.iter(f"{NS}circle"))) == 1
    assert not [e for e in root.iter(f"{NS}line") if e.find(f"{NS}title") is not None]


@pytest.mark.parametrize("factors, series, says", [
    ([], {"fidelity": []}, "finite factors"),
    ([0.5, float("nan")], {"fidelity": [0.1, 0.2]}, "finite factors"),
    ([0.5, 1.0], {"fidelity": [0.1]}, "one score in"),
    ([0.5], {"fidelity": [1.5]}, "one score in"),
])
def test_bad_input_is_refused(factors, series, says):
    with pytest.raises(ValueError, match=says):
        sweep_chart_svg(factors, series, None, "t")
