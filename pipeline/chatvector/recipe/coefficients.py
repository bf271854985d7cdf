"""The coefficient schedule: which λ each tensor gets. Pure: no I/O, no torch.

Precedence for a tensor name:
  1. the first module rule whose regex matches (`re.search` on the full tensor name);
  2. its layer's value, when the name has a layer component and the recipe sets layer values;
  3. the default.

A tensor belongs to layer i when its name has a `layers.<i>.` component (or an architecture's
equivalent: `h.<i>.`, `blocks.<i>.`, `layer.<i>.`); the leftmost such component counts
(`conventions.layer_index`, beside the other tensor roles).
Embeddings, the final norm and lm_head have none, so only module rules or the default apply to them.
Layer indices at or past `num_layers` (extra layers some checkpoints carry) take the default too.

Layer values come in one of three forms (`LayerSpec`):
  LayerRanges  `layers: {"0-3": 0.5, "31": 0.8}`   inclusive ranges; layers not named take the default
  LayerList    `layers: [v0, v1, ...]`              exactly one value per layer
  Gradient     `gradient: [v0, ..., vk]`            piecewise-linear over the layer stack (see `Gradient`)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace

from chatvector.conventions import layer_index

_LAYER_KEY = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")

FIELD = "coefficients"


def parse_layer_key(key: str) -> tuple[int, int]:
    """`"3"` -> (3, 3); `"0-3"` -> (0, 3). Raises ValueError with a one-line reason."""
    if key.strip().startswith("-"):
        raise ValueError(f"layer indices start at 0, got '{key}'")
    match = _LAYER_KEY.fullmatch(key)
    if not match:
        raise ValueError(f"expected a layer index like \"3\" or an inclusive range like \"0-3\", got '{key}'")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    if last < first:
        raise ValueError(f"range '{key}' ends before it starts; write \"{last}-{first}\"")
    return first, last


def _layers_text(first: int, last: int) -> str:
    return f"layer {first}" if first == last else f"layers {first}-{last}"


@dataclass(frozen=True)
class LayerRange:
    first: int
    last: int  # inclusive
    value: float
    key: str = ""  # as written in the recipe ("0-3"), for messages; derived when empty

    def __post_init__(self) -> None:
        if not self.key:
            key = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
            object.__setattr__(self, "key", key)

    @property
    def field_path(self) -> str:
        return f"{FIELD}.layers.{json.dumps(self.key)}"


@dataclass(frozen=True)
class LayerRanges:
    """`layers:` as a map of inclusive ranges; layers not covered take the default."""

    ranges: tuple[LayerRange, ...]

    def value(self, layer: int, num_layers: int) -> float | None:
        for entry in self.ranges:
            if entry.first <= layer <= entry.last:
                return entry.value
        return None

    def check(self, num_layers: int) -> list[tuple[str, str]]:
        problems = []
        for entry in self.ranges:
            if entry.last >= num_layers:
                missing = _layers_text(max(entry.first, num_layers), entry.last)
                verb = "does" if missing.startswith("layer ") else "do"
                problems.append(
                    (entry.field_path, f"{missing} {verb} not exist (the cp model has {num_layers} layers)")
                )
        return problems


@dataclass(frozen=True)
class LayerList:
    """`layers:` as a list: exactly one value per layer."""

    values: tuple[float, ...]

    def value(self, layer: int, num_layers: int) -> float | None:
        return self.values[layer] if layer < len(self.values) else None

    def check(self, num_layers: int) -> list[tuple[str, str]]:
        if len(self.values) == num_layers:
            return []
        message = (
            f"lists {len(self.values)} values but the cp model has {num_layers} layers; "
            "give exactly one value per layer (or use a map of ranges, or gradient)"
        )
        return [(f"{FIELD}.layers", message)]


@dataclass(frozen=True)
class Gradient:
    """`gradient: [v0, ..., vk]` (k >= 1): anchors spread evenly over the layer stack.

    With L layers, layer i sits at position t = i·k/(L−1) (t = 0 when L = 1) and gets
    v[⌊t⌋] + (t − ⌊t⌋)·(v[⌊t⌋+1] − v[⌊t⌋]); the last layer gets v[k].
    Example: [0.2, 1.0] over 5 layers -> 0.2, 0.4, 0.6, 0.8, 1.0.
    """

    anchors: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.anchors) < 2:
            raise ValueError(f"a gradient needs at least 2 anchor values, got {len(self.anchors)}")

    def value(self, layer: int, num_layers: int) -> float | None:
        k = len(self.anchors) - 1
        if layer >= num_layers:
            return None
        if num_layers == 1:
            return self.anchors[0]
        if layer == num_layers - 1:
            return self.anchors[k]
        whole, rest = divmod(layer * k, num_layers - 1)  # t = whole + rest/(L−1), floor exact
        low, high = self.anchors[whole], self.anchors[whole + 1]
        return low + rest / (num_layers - 1) * (high - low)

    def check(self, num_layers: int) -> list[tuple[str, str]]:
        return []


LayerSpec = LayerRanges | LayerList | Gradient


@dataclass(frozen=True)
class ModuleRule:
    match: str  # a regex, applied with re.search to the full tensor name
    value: float
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", re.compile(self.match))


@dataclass(frozen=True)
class Coefficients:
    default: float = 1.0
    layers: LayerSpec | None = None
    modules: tuple[ModuleRule, ...] = ()

    def explain(self, tensor_name: str, num_layers: int) -> tuple[float, str]:
        """λ for one tensor and the rule that decided: "module rule 0 ('norm')", "layer 3" or "default"."""
        for number, rule in enumerate(self.modules):
            if rule.pattern.search(tensor_name):
                return rule.value, f"module rule {number} ('{rule.match}')"
        layer = layer_index(tensor_name)
        if layer is not None and self.layers is not None:
            value = self.layers.value(layer, num_layers)
            if value is not None:
                return value, f"layer {layer}"
        return self.default, "default"

    def value_for(self, tensor_name: str, num_layers: int) -> float:
        return self.explain(tensor_name, num_layers)[0]

    def layer_values(self, num_layers: int) -> list[float]:
        """Each layer's λ before module rules (for charts and plan tables)."""
        values = []
        for layer in range(num_layers):
            value = self.layers.value(layer, num_layers) if self.layers is not None else None
            values.append(self.default if value is None else value)
        return values

    def check_layers(self, num_layers: int) -> list[tuple[str, str]]:
        """(field path, message) for every layer setting the model cannot satisfy; empty when all fit."""
        return self.layers.check(num_layers) if self.layers is not None else []

    def normalized(self) -> dict:
        """The schedule as plain data, for the recipe's canonical form."""
        layers: dict | None = None
        if isinstance(self.layers, LayerRanges):
            layers = {"ranges": sorted([r.first, r.last, r.value] for r in self.layers.ranges)}
        elif isinstance(self.layers, LayerList):
            layers = {"list": list(self.layers.values)}
        elif isinstance(self.layers, Gradient):
            layers = {"gradient": list(self.layers.anchors)}
        return {"default": self.default, "layers": layers,
                "modules": [{"match": m.match, "value": m.value} for m in self.modules]}


def rule_name(reason: str) -> str:
    """The rule of an `explain` reason, without its regex: "module rule 0", "layer 3" or "default"."""
    return " ".join(reason.split()[:3]) if reason.startswith("module rule ") else reason


def scaled_coefficients(c: Coefficients, factor: float) -> Coefficients:
    """Every value of the schedule times `factor` (a λ sweep's variant, `chatvector.sweep.variants`, and the recipe its
    card pins): default, layer values or gradient anchors, module rules. The one place that scales a schedule."""
    layers = c.layers
    if isinstance(layers, LayerRanges):
        layers = LayerRanges(tuple(replace(r, value=factor * r.value) for r in layers.ranges))
    elif isinstance(layers, LayerList):
        layers = LayerList(tuple(factor * v for v in layers.values))
    elif isinstance(layers, Gradient):
        layers = Gradient(tuple(factor * v for v in layers.anchors))
    return Coefficients(factor * c.default, layers, tuple(ModuleRule(m.match, factor * m.value) for m in c.modules))


def layer_runs(values: list[float]) -> list[tuple[int, int, float]]:
    """Consecutive layers with one λ, as (first, last, value): the compact form tables and plans show."""
    runs: list[tuple[int, int, float]] = []
    for i, v in enumerate(values):
        if runs and runs[-1][2] == v:
            runs[-1] = (runs[-1][0], i, v)
        else:
            runs.append((i, i, v))
    return runs

