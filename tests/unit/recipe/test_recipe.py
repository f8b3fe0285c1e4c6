"""Recipe parsing: presets, options, files, and clear errors."""

from __future__ import annotations

import pytest

from edgecompile.errors import RecipeError
from edgecompile.ir.stage import Stage
from edgecompile.recipe import STAGES, parse_recipe


def test_default_and_fp32():
    assert str(parse_recipe(None)) == "fp32"
    assert parse_recipe("fp32").to_json() == {"spec": "fp32", "parts": [{"preset": "fp32", "options": {}}]}


def test_parts_and_options(monkeypatch):
    demo = Stage("demo", "test preset", {"bits": "code bits", "min_seq": "gate"}, dict, lambda m, o, c: (m, None), 0)
    monkeypatch.setitem(STAGES, "demo", demo)
    r = parse_recipe("demo:bits=16,min_seq=0+fp32")
    assert [p.preset for p in r.parts] == ["demo", "fp32"]
    assert r.parts[0].options == {"bits": "16", "min_seq": "0"}
    assert str(r) == "demo:bits=16,min_seq=0+fp32"


def test_recipe_file(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text('[[part]]\npreset = "fp32"\n')
    assert str(parse_recipe(str(f))) == "fp32"
    f.write_text("[[part]]\nbits = 3\n")
    with pytest.raises(RecipeError, match="lacks 'preset'"):
        parse_recipe(str(f))
    with pytest.raises(RecipeError, match="recipe file not found"):
        parse_recipe(str(tmp_path / "none.toml"))


@pytest.mark.parametrize(
    "text,msg",
    [
        ("fp33", "unknown recipe preset 'fp33'; did you mean fp32"),
        ("fp32:bits=4", "has no option 'bits'"),
        ("fp32:bits", "malformed recipe option 'bits'"),
    ],
)
def test_errors(text, msg):
    with pytest.raises(RecipeError, match=msg):
        parse_recipe(text)


def test_stages_follow_the_registry_with_typed_options():
    from edgecompile.lowrank.options import LowRankOptions
    from edgecompile.quant.options import QuantOptions

    stages = parse_recipe("lowrank:ratio=0.25+int8-integer-only:ibert,keep_worst=2").stages()
    assert [s.preset for s, _ in stages] == ["lowrank", "int8-integer-only"]
    (_, lr), (_, q) = stages
    assert isinstance(lr, LowRankOptions) and lr.value == 0.25
    assert isinstance(q, QuantOptions) and q.integer_only and q.keep_worst == 2
    assert dict(q.nonlinear)["softmax"] == "ibert"


@pytest.mark.parametrize(
    "text,exclusive,msg",
    [
        ("int8+lowrank", True, "lowrank must come before int8.*write lowrank\\+int8"),
        ("int8+hash-attention", True, "hash-attention must come before int8"),
        ("int8:observer=mse+int8", True, "'int8' is given twice"),
        ("int8+int8-integer-only", True, "do not combine"),
        ("fp16+int8", True, "int8 with fp16 activations is a Core ML recipe"),
        ("int8:observer=median", True, "unknown observer"),
    ],
)
def test_stage_order_and_combinations_are_checked(text, exclusive, msg):
    with pytest.raises(RecipeError, match=msg):
        parse_recipe(text).stages(exclusive=exclusive)


def test_core_ml_takes_fp16_with_int8():
    assert [s.preset for s, _ in parse_recipe("fp16+int8").stages(exclusive=False)] == ["fp16", "int8"]
