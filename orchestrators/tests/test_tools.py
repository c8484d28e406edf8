"""Built-in tools and the registry."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrators import tools
from orchestrators.runtime import Tool, ToolContext
from orchestrators.tools import ToolRegistry, builtin_tools, calculate, make_tool

CTX = ToolContext(org_slug="alpha", run_id="run-1")


async def call(name: str, args):
    return await builtin_tools.get(name).fn(args, CTX)


# --- registry -----------------------------------------------------------------------------------


def test_builtin_tools_are_registered_with_specs():
    assert builtin_tools.names() == ["calculator", "clock", "http_get"]
    assert [s["function"]["name"] for s in builtin_tools.specs()] == [
        "calculator",
        "clock",
        "http_get",
    ]
    assert builtin_tools.get("clock").spec()["function"]["parameters"]["properties"] == {
        "timezone": {"type": "string", "description": "e.g. Europe/Paris"}
    }
    assert all(isinstance(t, Tool) for t in builtin_tools)


def test_registry_refuses_a_duplicate_name():
    registry = ToolRegistry([builtin_tools.get("clock")])

    with pytest.raises(ValueError, match="A tool named 'clock' is already registered."):
        registry.register(builtin_tools.get("clock"))

    assert registry.names() == ["clock"]


def test_registry_get_unknown():
    with pytest.raises(KeyError, match="No tool named 'nope'"):
        ToolRegistry().get("nope")
    assert "nope" not in builtin_tools
    assert "clock" in builtin_tools


async def test_arguments_are_validated_against_the_schema():
    called = []

    async def echo(args, context):
        called.append(args)
        return args

    tool = make_tool(
        "echo",
        "echo",
        {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        echo,
    )

    assert await tool.fn({"n": "three"}, CTX) == {
        "error": "Invalid arguments at n: 'three' is not of type 'integer'"
    }
    assert await tool.fn({}, CTX) == {"error": "Invalid arguments: 'n' is a required property"}
    assert called == []
    assert await tool.fn({"n": 3}, CTX) == {"n": 3}


# --- calculator ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        ("2*(3+4)", 14),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("-2 ** 2", -4),
        ("+3 - -3", 6),
        ("2 ** 10", 1024),
        ("9 ** 999 // 9 ** 998", 9),
        ("1.5 * 4", 6.0),
    ],
)
async def test_calculator_evaluates_arithmetic(expression, result):
    assert await call("calculator", {"expression": expression}) == {
        "expression": expression,
        "result": result,
    }


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        (
            "__import__('os')",
            "Only numbers, + - * / // % **, unary + and -, and parentheses are allowed.",
        ),
        ("x + 1", "Only numbers, + - * / // % **, unary + and -, and parentheses are allowed."),
        (
            "(1).__class__",
            "Only numbers, + - * / // % **, unary + and -, and parentheses are allowed.",
        ),
        ("[1, 2]", "Only numbers, + - * / // % **, unary + and -, and parentheses are allowed."),
        ("'a' * 3", "Only numbers, + - * / // % **, unary + and -, and parentheses are allowed."),
        ("True + 1", "Only numbers, + - * / // % **, unary + and -, and parentheses are allowed."),
        ("2 ** 100000", "Exponents are limited to 1000."),
        ("99 ** 999", "The result is too large."),
        ("((9 ** 99) ** 99) ** 99", "The result is too large."),
        ("1 / 0", "Division by zero."),
        ("1e308 * 10", "The result is not a finite number."),
        ("(-8) ** 0.5", "The result is not a real number."),
        ("2 +", "The expression is not valid arithmetic."),
    ],
)
async def test_calculator_refuses(expression, error):
    assert await call("calculator", {"expression": expression}) == {"error": error}


async def test_calculator_caps_the_expression_length():
    assert calculate("1+" * 99 + "1") == 100
    with pytest.raises(ValueError, match="Expressions are limited to 200 characters."):
        calculate("1+" * 100 + "1")
    result = await call("calculator", {"expression": "1+" * 100 + "1"})
    assert result["error"].startswith("Invalid arguments at expression: ")


# --- clock --------------------------------------------------------------------------------------


@pytest.fixture
def frozen_now(monkeypatch):
    monkeypatch.setattr(tools, "_now", lambda: datetime(2026, 1, 15, 11, 30, 5, tzinfo=UTC))


async def test_clock_defaults_to_utc(frozen_now):
    assert await call("clock", {}) == {
        "timezone": "UTC",
        "datetime": "2026-01-15T11:30:05+00:00",
        "utc_offset": "+00:00",
        "weekday": "Thursday",
    }


@pytest.mark.parametrize(
    ("zone", "stamp", "offset"),
    [
        ("Europe/Paris", "2026-01-15T12:30:05+01:00", "+01:00"),
        ("Asia/Kolkata", "2026-01-15T17:00:05+05:30", "+05:30"),
        ("America/New_York", "2026-01-15T06:30:05-05:00", "-05:00"),
    ],
)
async def test_clock_in_a_time_zone(frozen_now, zone, stamp, offset):
    result = await call("clock", {"timezone": zone})

    assert (result["datetime"], result["utc_offset"]) == (stamp, offset)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd"])
async def test_clock_unknown_zone_is_an_error_result(zone):
    assert await call("clock", {"timezone": zone}) == {
        "error": f"Unknown time zone {zone!r}; use an IANA name such as 'Europe/Paris'."
    }


async def test_clock_rejects_unexpected_arguments():
    assert await call("clock", {"zone": "UTC"}) == {
        "error": "Invalid arguments: Additional properties are not allowed ('zone' was unexpected)"
    }


# --- http_get -----------------------------------------------------------------------------------


PRIVATE = (
    "resolves to a private or reserved address, which is not allowed. An operator can allow it "
    "with CADENCE_EGRESS_ALLOWED_HOSTS (this host) or CADENCE_EGRESS_ALLOWED_NETWORKS (its "
    "network)."
)


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://127.0.0.1:8000/", f"The host 127.0.0.1 {PRIVATE}"),
        ("http://169.254.169.254/latest/meta-data/", f"The host 169.254.169.254 {PRIVATE}"),
        ("http://localhost/", f"The host localhost {PRIVATE}"),
        ("file:///etc/passwd", "Only http and https URLs are allowed, not file."),
    ],
)
async def test_http_get_is_refused_on_private_addresses(settings, url, error):
    settings.CADENCE_EGRESS_ALLOW_PRIVATE = False
    settings.CADENCE_EGRESS_ALLOWED_HOSTS = []

    assert await call("http_get", {"url": url}) == {"error": error}


async def test_http_get_reaches_an_allowed_host(openai_server):
    openai_server.models = ["m1"]

    result = await call("http_get", {"url": openai_server.base_url + "/models"})

    assert result == {
        "status": 200,
        "content_type": "application/json",
        "body": '{"object": "list", "data": [{"id": "m1", "object": "model", "created": 1700000000, "owned_by": "fake"}]}',
        "truncated": False,
    }
    assert openai_server.last_request.path == "/v1/models"


async def test_http_get_truncates_long_bodies(openai_server, monkeypatch):
    monkeypatch.setattr(tools, "HTTP_GET_MAX_CHARS", 12)

    result = await call("http_get", {"url": openai_server.base_url + "/models"})

    assert (result["body"], result["truncated"]) == ('{"object": "', True)


async def test_http_get_reports_a_connection_failure(openai_server):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result = await call("http_get", {"url": f"http://127.0.0.1:{port}/"})

    assert result == {"error": "The request failed (ConnectError)."}
