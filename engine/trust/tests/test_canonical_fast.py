"""The verifier's canonical JSON takes the standard library's encoder where it gives RFC 8785's
bytes; for every JSON value it must equal the `rfc8785` package's output, or refuse alike."""

from __future__ import annotations

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.trust.verify_bundle import _NotPlain, _plain, canonical

_keys = st.text(max_size=6) | st.sampled_from(["a", "B", "é", "\ufb01", "\U0001f600", "\ue000", ""])
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.sampled_from(["\x00", "\x1f", "\x7f", '"\\', "\b\f\n\r\t", "\U0001f600", "\u2028"])
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=600, deadline=None)
@given(_values)
def test_the_fast_path_gives_rfc_8785_bytes(value):
    assert canonical(value) == rfc8785.dumps(value)


def test_what_the_fast_path_leaves_to_rfc_8785():
    # Keys outside the BMP sort differently by code point and by UTF-16 code unit.
    astral = {"\U0001f600": 1, "\ufb01": 2}
    with pytest.raises(_NotPlain):
        _plain(astral)
    # UTF-16: D83D DE00 sorts before FB01, though U+1F600 is above U+FB01.
    assert canonical(astral) == '{"\U0001f600":1,"\ufb01":2}'.encode()
    # Floats are formatted as ECMAScript does (1e+21 here, 1e21 there; 1.0 is 1).
    for number in (
        1.0, 1e21, 1e-7, 0.1, -0.0, 123456789.125, 9999999999999998.0, 2.0**53, 2.0**53 - 1,
        1e-4, 0.0001234, 9.9e-5, 1e16 - 2, 1e16, 123456789012345.67, 5e-324,
        1.7976931348623157e308, -1e15 - 0.5, 3.0e20, 1e20 + 2**17,
    ):  # fmt: skip
        assert canonical([number]) == rfc8785.dumps([number]), number
        assert canonical({"n": -number}) == rfc8785.dumps({"n": -number}), number
    # Integers beyond 2**53 and lone surrogates are refused alike.
    for bad in ([2**53], ["\ud800"], {1: "x"}):
        try:
            rfc8785.dumps(bad)
        except Exception as expected:
            refused = type(expected)
        else:
            refused = None
        try:
            canonical(bad)
        except Exception as got:
            assert type(got) is refused
        else:
            assert refused is None
