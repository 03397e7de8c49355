"""Nesting depth of parsed JSON: exact boundary, early exit, no recursion."""

from __future__ import annotations

import orjson
import pytest

from broker.jsonlimits import nesting_exceeds


def _nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"[]" + b"}" * (depth - 1)


@pytest.mark.parametrize("depth", [1, 5, 32, 33, 260, 1000])
def test_depth_boundary(depth: int) -> None:
    body = _nested(depth)
    value = orjson.loads(body)
    assert nesting_exceeds(value, 32) is (depth > 32)
    assert nesting_exceeds(value, 32, body) is (depth > 32)


def test_wide_but_shallow_is_fine_and_scalars_have_no_depth() -> None:
    value = {"assignments": [{"adamId": str(i)} for i in range(9000)]}
    assert not nesting_exceeds(value, 3)
    assert nesting_exceeds(value, 2)
    assert not nesting_exceeds("text", 1)
    assert not nesting_exceeds(18446744073709551616, 1)


def test_brackets_inside_strings_do_not_fool_the_check() -> None:
    body = orjson.dumps({"s": "[[[[[[[[[[{{{{{{{{{{"})
    assert not nesting_exceeds(orjson.loads(body), 2, body)
