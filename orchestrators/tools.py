"""Tools a model can call: a registry, and the built-in ``clock``, ``calculator`` and ``http_get``.

A tool is a ``runtime.Tool``: a name, a description, a JSON Schema for its arguments and an async
``fn(args, context)``. Every tool built here with ``make_tool`` validates its arguments against
the schema before running, and reports what went wrong (bad arguments, an unknown time zone, a
refused URL) as a result ``{"error": "..."}`` the model can read and act on; only programming
errors raise.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import jsonschema

from cadence_site.outbound import EgressDenied, fetch
from orchestrators.runtime import Tool, ToolContext

ToolFn = Callable[[dict[str, Any], ToolContext], Awaitable[Any]]


class ToolRegistry:
    """Tools by name. One registry per scope (the built-ins, a plugin set); names are unique."""

    def __init__(self, tools: tuple[Tool, ...] | list[Tool] = ()):
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> Tool:
        if tool.name in self._tools:
            raise ValueError(f"A tool named {tool.name!r} is already registered.")
        self._tools[tool.name] = tool
        return tool

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise KeyError(f"No tool named {name!r}.") from None

    def names(self) -> list[str]:
        return sorted(self._tools)

    def specs(self) -> list[dict[str, Any]]:
        """The OpenAI ``tools`` declarations, in name order."""
        return [self._tools[name].spec() for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._tools)


def validation_error(schema: dict[str, Any], args: Any) -> str | None:
    """A readable reason why ``args`` do not match ``schema``, or None when they do."""
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(args))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"Invalid arguments{f' at {where}' if where else ''}: {error.message}"


def make_tool(name: str, description: str, parameters: dict[str, Any], fn: ToolFn) -> Tool:
    """A Tool whose fn checks its arguments against ``parameters`` first."""
    jsonschema.Draft202012Validator.check_schema(parameters)

    async def call(args: dict[str, Any], context: ToolContext) -> Any:
        problem = validation_error(parameters, args)
        if problem is not None:
            return {"error": problem}
        return await fn(args, context)

    call.__name__ = f"tool_{name}"
    return Tool(name=name, description=description, parameters=parameters, fn=call)


# --- clock --------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)  # a seam: tests replace it to get exact values


async def _clock(args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    name = args.get("timezone") or "UTC"
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return {"error": f"Unknown time zone {name!r}; use an IANA name such as 'Europe/Paris'."}
    now = _now().astimezone(zone)
    return {
        "timezone": name,
        "datetime": now.isoformat(timespec="seconds"),
        "utc_offset": now.strftime("%z")[:3] + ":" + now.strftime("%z")[3:],
        "weekday": now.strftime("%A"),
    }


# --- calculator ---------------------------------------------------------------------------------

MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 1000
MAX_RESULT_BITS = 4096  # about 1,233 decimal digits: every step stays cheap

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


class CalculatorError(ValueError):
    pass


def _checked(value: Any) -> int | float:
    if isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS:
        raise CalculatorError("The result is too large.")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("The result is not a finite number.")
    if not isinstance(value, int | float):  # (-8) ** 0.5 is complex
        raise CalculatorError("The result is not a real number.")
    return value


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _checked(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            if abs(right) > MAX_EXPONENT:
                raise CalculatorError(f"Exponents are limited to {MAX_EXPONENT}.")
            # Estimate before computing: 9 ** 1000 ** ... must fail fast, not after the work.
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                if abs(left).bit_length() * right > MAX_RESULT_BITS + 64:
                    raise CalculatorError("The result is too large.")
        try:
            return _checked(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise CalculatorError("Division by zero.") from None
        except OverflowError:
            raise CalculatorError("The result is too large.") from None
    raise CalculatorError(
        "Only numbers, + - * / // % **, unary + and -, and parentheses are allowed."
    )


def calculate(expression: str) -> int | float:
    """Evaluate arithmetic safely: the AST is walked by hand, nothing is ever ``eval``-ed."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"Expressions are limited to {MAX_EXPRESSION_CHARS} characters.")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError):
        raise CalculatorError("The expression is not valid arithmetic.") from None
    return _evaluate(tree)


async def _calculator(args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    expression = args["expression"]
    try:
        return {"expression": expression, "result": calculate(expression)}
    except CalculatorError as exc:
        return {"error": str(exc)}


def idempotency_headers(context: ToolContext) -> dict[str, str]:
    """`Idempotency-Key: <run id>:<step seq>` for a recorded run's outbound tool request: the
    same step run again after a crash sends the same key, so the server can apply it once."""
    key = getattr(context, "idempotency_key", "")
    return {"Idempotency-Key": key} if key else {}


# --- http_get -----------------------------------------------------------------------------------

HTTP_GET_MAX_CHARS = 4000  # what a model reads of a page; the rest costs tokens


async def _http_get(args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    try:
        status, headers, text = await fetch(
            args["url"], headers=idempotency_headers(context) or None
        )
    except EgressDenied as exc:
        return {"error": exc.message}
    except httpx.TimeoutException:
        return {"error": "The request timed out."}
    except httpx.HTTPError as exc:
        return {"error": f"The request failed ({type(exc).__name__})."}
    return {
        "status": status,
        "content_type": headers.get("content-type", ""),
        "body": text[:HTTP_GET_MAX_CHARS],
        "truncated": len(text) > HTTP_GET_MAX_CHARS,
    }


clock_tool = make_tool(
    "clock",
    "The current date and time in a time zone (IANA name, default UTC).",
    {
        "type": "object",
        "properties": {"timezone": {"type": "string", "description": "e.g. Europe/Paris"}},
        "additionalProperties": False,
    },
    _clock,
)
calculator_tool = make_tool(
    "calculator",
    "Evaluate an arithmetic expression: numbers, + - * / // % **, parentheses.",
    {
        "type": "object",
        "properties": {
            "expression": {
                "type": "string",
                "maxLength": MAX_EXPRESSION_CHARS,
                "description": "e.g. 2*(3+4)",
            }
        },
        "required": ["expression"],
        "additionalProperties": False,
    },
    _calculator,
)
http_get_tool = make_tool(
    "http_get",
    "Fetch a public http(s) URL with GET; returns the status and the start of the body.",
    {
        "type": "object",
        "properties": {"url": {"type": "string", "description": "an http or https URL"}},
        "required": ["url"],
        "additionalProperties": False,
    },
    _http_get,
)

builtin_tools = ToolRegistry([clock_tool, calculator_tool, http_get_tool])
