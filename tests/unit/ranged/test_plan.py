"""Ranged input shapes: parsing, grouping and bucket sizes (no build)."""

from __future__ import annotations

import pytest

from edgecompile.errors import InputSpecError
from edgecompile.frontend.spec import format_shape, parse_shape_spec
from edgecompile.ranged.plan import MAX_BUILDS, bucket_sizes, range_plan


def test_parse_ranges():
    assert parse_shape_spec("1x1..128") == (1, (1, 128))
    assert parse_shape_spec("1..8x16..16") == ((1, 8), 16)  # LO == HI is a fixed size
    assert parse_shape_spec("1x128") == (1, 128)
    assert format_shape((1, (1, 128))) == "1x1..128"
    for bad in ("1x0..5", "1x9..3", "1x..5", "1x1...5", "1xa..b"):
        with pytest.raises(InputSpecError):
            parse_shape_spec(bad)


def test_bucket_sizes():
    assert bucket_sizes(1, 256) == [16, 32, 64, 128, 256]
    assert bucket_sizes(1, 8) == [1, 2, 4, 8]
    assert bucket_sizes(1, 100) == [8, 16, 32, 64, 100]
    assert bucket_sizes(40, 100) == [64, 100]  # inputs of 40..63 pad to 64
    assert bucket_sizes(7, 7) == [7]


def test_grouping_by_onnx_names_and_by_axis():
    names = {"ids": ["batch", "seq"], "mask": ["batch", "seq"]}
    plan = range_plan({"ids": (1, (1, 64)), "mask": (1, (1, 64))}, names)
    assert list(plan.sizes) == ["seq"] and len(plan.combos()) == 5
    assert plan.shapes({"seq": 16}) == {"ids": (1, 16), "mask": (1, 16)}
    unnamed = range_plan({"a": ((1, 4), (1, 64)), "b": ((1, 4), (1, 64))})
    assert len(unnamed.sizes) == 2 and len(unnamed.combos()) == 3 * 5  # batch 1, 2, 4 x five lengths
    with pytest.raises(InputSpecError, match="differs"):
        range_plan({"ids": (1, (1, 64)), "mask": (1, (1, 32))}, names)


def test_given_buckets_and_the_build_limit():
    names = {"ids": ["batch", "seq"]}
    assert range_plan({"ids": (1, (1, 64))}, names, {"seq": [8, 64]}).sizes == {"seq": [8, 64]}
    with pytest.raises(InputSpecError, match="include 64"):
        range_plan({"ids": (1, (1, 64))}, names, {"seq": [8, 32]})
    with pytest.raises(InputSpecError, match="not a ranged dimension"):
        range_plan({"ids": (1, (1, 64))}, names, {"len": [64]})
    with pytest.raises(InputSpecError, match=f"at most {MAX_BUILDS}"):
        range_plan({"ids": ((1, 64), (1, 512))}, {"ids": ["batch", "seq"]})
