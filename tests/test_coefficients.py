"""The coefficient schedule: layer membership, precedence, layer forms, gradient numbers, layer checks."""

import pytest

from chatvector.recipe.coefficients import (
    Coefficients,
    Gradient,
    LayerList,
    LayerRange,
    LayerRanges,
    ModuleRule,
    layer_index,
    parse_layer_key,
)


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("model.layers.3.mlp.down_proj.weight", 3),
        ("model.layers.31.self_attn.q_proj.weight", 31),
        ("transformer.h.3.attn.c_attn.weight", 3),
        ("gpt_neox.layers.3.attention.dense.weight", 3),
        ("transformer.blocks.7.ffn.up_proj.weight", 7),
        ("bert.encoder.layer.5.output.dense.weight", 5),
        ("layers.0.attention.wq.weight", 0),
        ("model.layers.2.block_sparse_moe.experts.6.w1.weight", 2),
        ("model.embed_tokens.weight", None),
        ("model.norm.weight", None),
        ("lm_head.weight", None),
        ("transformer.wte.weight", None),
        ("model.sublayers.3.weight", None),
        ("model.layers.x.weight", None),
    ],
)
def test_layer_index_finds_the_layer_component(name, index):
    assert layer_index(name) == index


@pytest.mark.parametrize(("key", "bounds"), [("3", (3, 3)), ("0-3", (0, 3)), ("10 - 12", (10, 12)), ("7-7", (7, 7))])
def test_parse_layer_key_reads_indices_and_inclusive_ranges(key, bounds):
    assert parse_layer_key(key) == bounds


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("3-1", "range '3-1' ends before it starts"),
        ("a", "expected a layer index like \"3\" or an inclusive range like \"0-3\", got 'a'"),
        ("-1", "layer indices start at 0, got '-1'"),
        ("1.5", "got '1.5'"),
        ("", "got ''"),
    ],
)
def test_parse_layer_key_rejects_bad_keys(key, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_layer_key(key)


RANGES = LayerRanges((LayerRange(0, 3, 0.5), LayerRange(31, 31, 0.8)))
RULES = (ModuleRule("norm", 0.0), ModuleRule("embed_tokens|lm_head", 1.0), ModuleRule(r"layers\.2\.", 0.3))


def test_module_rule_beats_layer_value_beats_default():
    coefficients = Coefficients(default=0.7, layers=RANGES, modules=RULES)
    assert coefficients.explain("model.layers.2.input_layernorm.weight", 32) == (0.0, "module rule 0 ('norm')")
    assert coefficients.explain("model.layers.1.mlp.up_proj.weight", 32) == (0.5, "layer 1")
    assert coefficients.explain("model.layers.31.mlp.up_proj.weight", 32) == (0.8, "layer 31")
    assert coefficients.explain("model.layers.10.mlp.up_proj.weight", 32) == (0.7, "default")


def test_first_matching_module_rule_wins():
    coefficients = Coefficients(layers=RANGES, modules=RULES)
    # both rule 0 ('norm') and rule 2 ('layers\.2\.') match; rule 0 comes first
    assert coefficients.explain("model.layers.2.post_attention_layernorm.weight", 32)[1] == "module rule 0 ('norm')"
    assert coefficients.explain("model.layers.2.mlp.up_proj.weight", 32) == (0.3, "module rule 2 ('layers\\.2\\.')")


def test_module_rules_search_anywhere_in_the_full_name():
    coefficients = Coefficients(modules=(ModuleRule("^lm_head", 0.0), ModuleRule("proj$", 0.2)))
    assert coefficients.value_for("lm_head.weight", 32) == 0.0
    assert coefficients.value_for("model.lm_head.weight", 32) == 1.0
    assert coefficients.value_for("model.layers.0.mlp.up_proj", 32) == 0.2


def test_tensors_outside_layers_use_module_rules_or_default():
    coefficients = Coefficients(default=0.9, layers=Gradient((0.0, 1.0)), modules=(ModuleRule("lm_head", 0.1),))
    assert coefficients.explain("model.embed_tokens.weight", 4) == (0.9, "default")
    assert coefficients.explain("model.norm.weight", 4) == (0.9, "default")
    assert coefficients.explain("lm_head.weight", 4) == (0.1, "module rule 0 ('lm_head')")


def test_layers_not_in_any_range_take_the_default():
    assert Coefficients(default=0.6, layers=RANGES).layer_values(6) == [0.5, 0.5, 0.5, 0.5, 0.6, 0.6]


def test_layer_past_the_layer_count_takes_the_default():
    coefficients = Coefficients(default=0.6, layers=LayerList((0.1, 0.2)))
    assert coefficients.explain("model.layers.2.mlp.up_proj.weight", 2) == (0.6, "default")
    assert Coefficients(default=0.6, layers=Gradient((0.1, 0.2))).value_for("model.layers.5.w", 2) == 0.6


def test_layer_list_gives_one_value_per_layer():
    coefficients = Coefficients(layers=LayerList((0.1, 0.2, 0.3)))
    assert coefficients.layer_values(3) == [0.1, 0.2, 0.3]
    assert coefficients.explain("transformer.h.1.mlp.c_fc.weight", 3) == (0.2, "layer 1")


def test_no_layer_setting_gives_the_default_everywhere():
    assert Coefficients(default=0.8).layer_values(3) == [0.8, 0.8, 0.8]
    assert Coefficients().value_for("model.layers.0.mlp.up_proj.weight", 1) == 1.0
    assert Coefficients().layer_values(0) == []


# The worked examples in recipes/README.md.
def test_gradient_two_anchors_over_five_layers():
    assert Coefficients(layers=Gradient((0.2, 1.0))).layer_values(5) == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


def test_gradient_three_anchors_over_five_layers():
    assert Coefficients(layers=Gradient((0.0, 1.0, 0.5))).layer_values(5) == pytest.approx([0.0, 0.5, 1.0, 0.75, 0.5])


def test_gradient_three_anchors_over_four_layers_interpolates_between_anchors():
    # t = i*2/3: 0, 2/3, 4/3, 2
    values = Coefficients(layers=Gradient((0.2, 1.0, 0.6))).layer_values(4)
    assert values == pytest.approx([0.2, 0.2 + 2 / 3 * 0.8, 1.0 - 1 / 3 * 0.4, 0.6])


def test_gradient_ends_exactly_on_the_first_and_last_anchor():
    values = Coefficients(layers=Gradient((0.3, 0.9, 0.1))).layer_values(32)
    assert values[0] == 0.3 and values[-1] == 0.1
    assert len(values) == 32


def test_gradient_over_one_layer_takes_the_first_anchor():
    assert Coefficients(layers=Gradient((0.3, 0.9))).layer_values(1) == [0.3]


def test_gradient_with_more_anchors_than_layers_samples_them():
    # 5 anchors over 3 layers: t = 0, 2, 4
    assert Coefficients(layers=Gradient((0.0, 0.1, 0.2, 0.3, 0.4))).layer_values(3) == pytest.approx([0.0, 0.2, 0.4])


def test_gradient_needs_two_anchors():
    with pytest.raises(ValueError, match="at least 2 anchor values"):
        Gradient((1.0,))


def test_module_rule_compiles_its_regex():
    assert ModuleRule("a|b", 0.5).pattern.pattern == "a|b"
    with pytest.raises(Exception, match="unterminated"):
        ModuleRule("a(", 0.5)


def test_check_layers_reports_indices_out_of_range():
    coefficients = Coefficients(
        layers=LayerRanges((LayerRange(0, 3, 0.5, "0-3"), LayerRange(40, 40, 0.8, "40"), LayerRange(30, 35, 1.0, "30-35")))
    )
    assert coefficients.check_layers(32) == [
        ('coefficients.layers."40"', "layer 40 does not exist (the cp model has 32 layers)"),
        ('coefficients.layers."30-35"', "layers 32-35 do not exist (the cp model has 32 layers)"),
    ]
    assert coefficients.check_layers(41) == []


def test_check_layers_reports_a_list_of_the_wrong_length():
    coefficients = Coefficients(layers=LayerList((0.1, 0.2, 0.3)))
    assert coefficients.check_layers(3) == []
    [(field, message)] = coefficients.check_layers(4)
    assert field == "coefficients.layers"
    assert message.startswith("lists 3 values but the cp model has 4 layers; give exactly one value per layer")


def test_check_layers_accepts_any_gradient_and_no_layers():
    assert Coefficients(layers=Gradient((0.1, 0.2, 0.3))).check_layers(1) == []
    assert Coefficients().check_layers(1) == []


def test_layer_range_key_defaults_to_its_bounds():
    assert LayerRange(2, 5, 1.0).key == "2-5"
    assert LayerRange(7, 7, 1.0).field_path == 'coefficients.layers."7"'


def test_coefficients_are_frozen_and_comparable():
    assert Coefficients(default=0.5, modules=(ModuleRule("norm", 0.0),)) == Coefficients(
        default=0.5, modules=(ModuleRule("norm", 0.0),)
    )
    with pytest.raises(AttributeError):
        Coefficients().default = 2.0  # type: ignore[misc]
