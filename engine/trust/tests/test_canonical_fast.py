"""The verifier's canonical JSON takes the standard library's encoder where it gives RFC 8785's
bytes; for every JSON value it must equal the `rfc8785` package's output, or refuse alike."""

from __future__ import annotations

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.trust.verify_bundle import _NotPlain, _plain, canonical, digest

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


def _reference_summary(record, previous):
    """step_summary as first written: every hash from the whole value's canonical JSON."""
    from engine.trust.verify_bundle import digest

    return {
        "seq": record.get("seq"),
        "kind": record.get("kind"),
        "name": record.get("name"),
        "outcome": record.get("outcome"),
        "inputs_hash": digest(record.get("inputs")),
        "outputs_hash": digest(record.get("outputs")),
        "record_hash": digest({"prev": previous, "record": record}),
    }


_holes = st.sampled_from(
    [
        "\x00cadence.hole:inputs\x00",
        "\x00cadence.hole:outputs\x00",
        '"\x00cadence.hole:inputs\x00',
        "\x00cadence.hole:inputs\x00\x00cadence.hole:outputs\x00",
    ]
)
_record_values = st.recursive(
    _scalars | _holes | st.tuples(_scalars, _holes),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys | _holes, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=600, deadline=None)
@given(
    st.fixed_dictionaries(
        {"seq": st.integers(0, 100), "name": st.text(max_size=5)},
        optional={
            "inputs": _record_values,
            "outputs": _record_values,
            "detail": _record_values,
            "\x00cadence.hole:inputs\x00": _record_values,
        },
    ),
    st.sampled_from(["0" * 64, "ab" * 32]),
)
def test_a_step_summary_composes_the_same_hashes_as_whole_values(record, previous):
    # The record's hash is composed from its inputs' and outputs' canonical bytes (made once):
    # it must be the hash of the whole record's canonical JSON, placeholder strings included.
    from engine.trust.verify_bundle import step_summary

    try:
        expected = _reference_summary(record, previous)
    except Exception as refused:
        with pytest.raises(type(refused)):
            step_summary(record, previous)
        return
    assert step_summary(record, previous) == expected


def test_jsonable_turns_what_json_cannot_hold_into_strings_at_any_depth():
    import datetime as dt
    import enum
    import uuid
    from decimal import Decimal

    from engine.trust.canonical import jsonable

    class Colour(enum.StrEnum):
        RED = "red"

    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    ident = uuid.UUID(int=7)
    value = {
        "a": [1, 2**60, float("nan"), when, (ident, Decimal("1.5")), {3: None, True: "x"}],
        5: {"deep": [{"k": [Colour.RED]}]},
        "s": "text",
        "f": 1.5,
    }
    assert jsonable(value) == {
        "a": [
            1,
            str(2**60),
            "nan",
            when.isoformat(),
            [str(ident), "1.5"],
            {"3": None, "True": "x"},
        ],
        "5": {"deep": [{"k": [Colour.RED]}]},
        "s": "text",
        "f": 1.5,
    }
    assert type(jsonable(value)["5"]["deep"][0]["k"][0]) is Colour  # kept as it came


# --- the signer's bytes (engine/trust/canonical.py: orjson where it writes RFC 8785's) ----------


@settings(max_examples=600, deadline=None)
@given(_values)
def test_the_signers_canonical_json_is_the_verifiers(value):
    from engine.trust import canonical as signer

    try:
        expected = canonical(value)
    except Exception as refused:
        with pytest.raises(type(refused)):
            signer.canonical(value)
        return
    assert signer.canonical(value) == expected
    assert signer.digest(value) == digest(value)


def test_the_signers_bytes_for_numbers_and_strings_at_the_edges():
    from engine.trust import canonical as signer

    numbers = [
        1.0, 1e21, 1e-7, 0.1, -0.0, 123456789.125, 9999999999999998.0, 2.0**53, 2.0**53 - 1,
        1e-4, 0.0001234, 9.9e-5, 1e16 - 2, 1e16, 123456789012345.67, 5e-324,
        1.7976931348623157e308, -1e15 - 0.5, 3.0e20, 1e20 + 2**17, 0.3, 2 / 3, 1e15 + 0.5,
        2**53 - 1, -(2**53 - 1), 0, 2**31,
    ]  # fmt: skip
    texts = [chr(c) for c in range(0x80)] + ["\u2028\u2029", "\ufeff", "\uffff", "\U0010ffff"]
    keys = {"\ue000": 1, "\uffff": 2, "z": 3, "\u00e9": 4, "": 5, "\U0001f600": 6}
    for value in [*numbers, *([n] for n in numbers), *texts, {t: t for t in texts}, keys]:
        assert signer.canonical(value) == rfc8785.dumps(value), repr(value)
    for refused in ([2**53], ["\ud800"], {1: "x"}, {"\udfff": 1}):
        with pytest.raises(Exception) as reference:
            rfc8785.dumps(refused)
        with pytest.raises(reference.type):
            signer.canonical(refused)


def _raw_scalars():
    import datetime as dt
    import uuid
    from decimal import Decimal

    return _scalars | st.sampled_from(
        [
            2**53,
            -(2**60),
            float("nan"),
            float("inf"),
            dt.datetime(2026, 12, 6, 9, 30, 1, 5, tzinfo=dt.UTC),
            dt.date(2026, 12, 6),
            uuid.UUID(int=7),
            Decimal("1.50"),
            (1, "two", 3.0),
        ]
    )


_raw_values = st.recursive(
    _raw_scalars(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(_keys | st.integers(0, 3), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "seq": st.integers(1, 100),
                "kind": st.sampled_from(["note", "llm_call", "tool_call"]),
                "name": st.text(max_size=5),
                "outcome": st.sampled_from(["completed", "failed"]),
            },
            optional={
                "parent_seq": st.none() | st.integers(1, 100),
                "inputs": _raw_values,
                "outputs": _raw_values,
                "detail": _raw_values,
                "duration_ms": st.floats(allow_nan=False) | st.none(),
                "started_at": _raw_scalars(),
            },
        ),
        max_size=4,
    )
)
def test_the_signers_chain_is_the_verifiers_over_jsonable_records(records):
    # The signer chains step records or their raw fields (proofs.step_fields): the same step
    # list and head as the verifier's chain over the records made jsonable.
    from engine.trust import canonical as signer
    from engine.trust.canonical import jsonable
    from engine.trust.verify_bundle import chain

    assert signer.chain(records) == chain([jsonable(r) for r in records])


def test_a_turns_records_never_reach_the_reference_encoder(monkeypatch):
    # What a turn's steps hold (text, numbers, nested messages, dates as ISO text) is written by
    # orjson: the standard library's encoder and rfc8785, several times slower, are not called.
    from engine.trust import canonical as signer
    from engine.trust import verify_bundle

    records = [
        {
            "seq": seq,
            "parent_seq": None if seq == 1 else 1,
            "kind": "note",
            "name": f"note_{seq}",
            "outcome": "completed",
            "inputs": {"messages": [{"role": "user", "content": "caf\u00e9 \U0001f600"}]},
            "outputs": {"final": "ok", "tokens": 5, "ratio": 0.25, "whole": 2.0},
            "detail": {"reads": ["messages"], "llm": {"ttft_ms": 0.182, "temperature": None}},
            "error": "",
            "error_type": "",
            "started_at": "2026-12-06T11:36:45.654168+00:00",
            "duration_ms": 21.837,
            "at": "2026-12-06T11:36:45.654255+00:00",
        }
        for seq in (1, 2, 3)
    ]
    expected = verify_bundle.chain(records)
    payload = {"steps": expected[0], "chain_head": expected[1], "run_id": "x", "n": 3}
    expected_payload = canonical(payload)

    def refuse(*args, **kwargs):
        raise AssertionError("the reference encoder was used")

    monkeypatch.setattr(verify_bundle, "_plain_dumps", refuse)
    monkeypatch.setattr(verify_bundle.rfc8785, "dumps", refuse)
    assert signer.chain(records) == expected
    assert signer.canonical_json(payload) == expected_payload
