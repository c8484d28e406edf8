"""Any OpenAI-compatible chat endpoint (OpenAI, Azure, Ollama, vLLM, llama.cpp) as a ChatProvider.

The official SDK speaks the protocol; Cadence adds the policy around it:

- every request goes through the one outbound client (egress policy, timeouts, no redirects);
- the SDK's own retries are off (``max_retries=0``): they would retry after text was streamed and
  ignore our cap, so retries happen here, only before the first delta was yielded (a retry after
  that would repeat text the user already saw), on 429, 408, 5xx and connection errors, with the
  engine's exponential backoff (``compute_delay``) or the server's ``Retry-After`` (seconds or an
  HTTP date; also OpenAI's ``retry-after-ms``), capped at ``max_retry_delay``;
- ``LLMSettings.timeout`` bounds each wait on the network (the response headers, then each chunk),
  not the whole answer: a long answer that keeps streaming is not cut. Timeouts are not retried:
  the call already waited its full budget;
- one circuit breaker per configuration (``LLMSettings.config_id``), from the engine's registry so
  every provider built for the same configuration shares its state. A call that failed for good
  with a provider-side failure (unavailable, rate limited, timeout) counts once, after its retries;
  a rejected key or unknown model is a configuration error and leaves the circuit alone.

Failures leave as ``LLMError`` with a stable code. The API key is never in a message or a log:
provider messages are scrubbed of it, and an authentication failure reports no provider text at all
(OpenAI echoes part of the key back).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

import httpx
import openai

from cadence_site.outbound import EgressDenied, acheck_url, async_client
from engine.errors import CircuitOpenError
from engine.resilience import Clock, compute_delay, get_circuit_breaker, get_default_clock
from orchestrators.llm.offline import parse_arguments
from orchestrators.runtime import (
    LLMDelta,
    LLMError,
    LLMResult,
    LLMSettings,
    ModelOptions,
    ToolCall,
    Usage,
    effective_max_tokens,
    effective_temperature,
)

logger = logging.getLogger(__name__)

RETRIED_CODES = ("llm_rate_limited", "llm_unavailable")
# Provider-side failures: what a circuit breaker is for. Configuration errors do not count.
COUNTED_CODES = ("llm_rate_limited", "llm_unavailable", "llm_timeout")


def retry_after_seconds(
    headers: Mapping[str, str] | None, now: datetime | None = None
) -> float | None:
    """The wait a server asked for: ``retry-after-ms``, or ``Retry-After`` in seconds or as a date."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _egress_denial(exc: BaseException) -> EgressDenied | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, EgressDenied):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class OpenAICompatibleProvider:
    default_base_url = "https://api.openai.com/v1"
    # The SDK's error types; the Anthropic SDK (same generator) has the same shapes.
    status_error: type[Exception] = openai.APIStatusError
    timeout_error: type[Exception] = openai.APITimeoutError
    connection_error: type[Exception] = openai.APIConnectionError
    api_error: type[Exception] = openai.APIError

    def __init__(
        self,
        settings: LLMSettings,
        *,
        clock: Clock | None = None,
        retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
        jitter: bool = True,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
    ):
        self.settings = settings
        self.clock = clock
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.jitter = jitter
        circuit = (
            settings.config_id
            or hashlib.sha256(f"{settings.base_url}|{settings.model}".encode()).hexdigest()[:16]
        )
        self.circuit = get_circuit_breaker(f"llm:{circuit}", failure_threshold, recovery_timeout)

    # --- the ChatProvider API -------------------------------------------------------------------

    async def stream(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        *,
        options: ModelOptions | None = None,
    ) -> AsyncIterator[LLMDelta | LLMResult]:
        self.check_options(options)
        try:
            self.circuit.before_call()
        except CircuitOpenError as exc:
            wait = f"; retry in {exc.retry_after:.0f} s" if exc.retry_after else ""
            raise LLMError(
                f"Calls to this LLM configuration are paused after repeated failures{wait}.",
                "llm_circuit_open",
                503,
            ) from None
        outcome: str | None = None
        try:
            async with aclosing(self._with_retries(messages, tools, options)) as items:
                async for item in items:
                    if isinstance(item, LLMResult):
                        # Decided before yielding: a consumer may stop reading at the result.
                        outcome = "success"
                    yield item
        except LLMError as exc:
            outcome = "failure" if exc.code in COUNTED_CODES else None
            raise
        finally:
            # A consumer that stops early (or a cancelled task) proves nothing: free the trial.
            if outcome == "success":
                self.circuit.record_success()
            elif outcome == "failure":
                self.circuit.record_failure()
            else:
                self.circuit.release_trial()

    # --- attempts -------------------------------------------------------------------------------

    def check_options(self, options: ModelOptions | None) -> None:
        """OpenAI-compatible servers take every option; a subclass refuses what its API lacks."""

    async def _with_retries(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        options: ModelOptions | None = None,
    ) -> AsyncIterator[LLMDelta | LLMResult]:
        s = self.settings
        base_url = s.base_url or self.default_base_url
        try:
            await acheck_url(base_url)
        except EgressDenied as exc:
            raise LLMError(exc.message, "egress_denied", 400) from None
        attempts = max(0, s.max_retries) + 1
        clock = self.clock or get_default_clock()
        # A client per call: pooled connections belong to one event loop, and Celery tasks and
        # tests each run their own loop; one TLS handshake is small beside a model's answer.
        async with async_client(timeout=s.timeout) as http:
            client = self._make_client(http, base_url)
            for attempt in range(1, attempts + 1):
                yielded = False
                try:
                    async with aclosing(self._once(client, messages, tools, options)) as items:
                        async for item in items:
                            if isinstance(item, LLMDelta):
                                yielded = True
                            yield item
                    return
                except Exception as exc:  # classified below; unknown errors re-raised as they are
                    error, server_wait = self._classify(exc, attempt)
                    if error is None:
                        raise
                    logger.warning(
                        "llm call failed: code=%s status=%s attempt=%d/%d config=%s",
                        error.code,
                        error.status,
                        attempt,
                        attempts,
                        s.config_id or "-",
                    )
                    if yielded or error.code not in RETRIED_CODES or attempt == attempts:
                        raise error from None
                    wait = compute_delay(
                        attempt,
                        delay=self.retry_delay,
                        backoff="exponential",
                        max_delay=self.max_retry_delay,
                        jitter=self.jitter,
                    )
                    if server_wait is not None:
                        wait = min(server_wait, self.max_retry_delay)
                    await clock.sleep(wait)

    def _make_client(self, http: httpx.AsyncClient, base_url: str) -> Any:
        return openai.AsyncOpenAI(
            base_url=base_url,
            api_key=self.settings.api_key or "not-needed",  # local servers take any key
            http_client=http,
            max_retries=0,  # retries are ours: see the module docstring
            timeout=self.settings.timeout,
        )

    def _request(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        options: ModelOptions | None = None,
    ) -> dict[str, Any]:
        s = self.settings
        kwargs: dict[str, Any] = {
            "model": s.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            kwargs["tools"] = tools
        temperature = effective_temperature(s, options)
        if temperature is not None:
            kwargs["temperature"] = temperature
        max_tokens = effective_max_tokens(s, options)
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if options is not None:
            for name in ("top_p", "seed", "presence_penalty", "frequency_penalty"):
                if getattr(options, name) is not None:
                    kwargs[name] = getattr(options, name)
            if options.stop:
                kwargs["stop"] = list(options.stop)
            if options.response_format is not None:
                kwargs["response_format"] = options.response_format
            if options.tool_choice is not None and tools:
                kwargs["tool_choice"] = options.tool_choice
        return kwargs

    async def _once(
        self,
        client: Any,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        options: ModelOptions | None = None,
    ) -> AsyncIterator[LLMDelta | LLMResult]:
        limit = self.settings.timeout
        async with asyncio.timeout(limit):
            stream = await client.chat.completions.create(**self._request(messages, tools, options))
        parts: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        usage = Usage()
        finish_reason: str | None = None
        try:
            while True:
                try:
                    async with asyncio.timeout(limit):
                        chunk = await stream.__anext__()
                except StopAsyncIteration:
                    break
                if chunk.usage is not None:
                    usage = Usage(
                        chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0
                    )
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue  # n=1 is all Cadence asks for
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
                    delta = choice.delta
                    if delta is None:
                        continue
                    for fragment in delta.tool_calls or ():
                        self._merge_tool_call(calls, fragment)
                    if delta.content:
                        parts.append(delta.content)
                        yield LLMDelta(delta.content)
        finally:
            await stream.close()
        tool_calls = tuple(
            ToolCall(
                id=slot["id"] or f"call_{index}",
                name=slot["name"],
                arguments=parse_arguments("".join(slot["arguments"])),
            )
            for index, slot in sorted(calls.items())
        )
        if finish_reason is None:
            finish_reason = "tool_calls" if tool_calls else "stop"
        yield LLMResult("".join(parts), tool_calls, usage, finish_reason)

    @staticmethod
    def _merge_tool_call(calls: dict[int, dict[str, Any]], fragment: Any) -> None:
        """Tool calls stream as fragments keyed by index: the id and name first, then arguments."""
        slot = calls.setdefault(fragment.index or 0, {"id": "", "name": "", "arguments": []})
        if fragment.id:
            slot["id"] = fragment.id
        function = fragment.function
        if function is None:
            return
        # Some servers repeat the name on every fragment; OpenAI sends it once.
        if function.name and function.name != slot["name"]:
            slot["name"] += function.name
        if function.arguments:
            slot["arguments"].append(function.arguments)

    # --- errors ---------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        key = self.settings.api_key
        return text.replace(key, "***") if key else text

    def _provider_message(self, exc: Any) -> str:
        """The provider's own words (its error body's message), scrubbed of the key and cut short."""
        body = exc.body
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, str):
            message = exc.message
        return self._scrub(message)[:300]

    def _classify(self, exc: Exception, attempt: int) -> tuple[LLMError | None, float | None]:
        """(the LLMError for ``exc``, the wait the server asked for); None for unknown errors."""
        denial = _egress_denial(exc)
        if denial is not None:
            return LLMError(denial.message, "egress_denied", 400), None
        after = f" after {attempt} attempt{'s' if attempt > 1 else ''}"
        if isinstance(exc, self.status_error):
            status = exc.status_code  # type: ignore[attr-defined]
            wait = retry_after_seconds(exc.response.headers)  # type: ignore[attr-defined]
            if status in (401, 403):
                return LLMError(
                    f"The provider rejected the API key (HTTP {status}).", "llm_auth_failed", status
                ), None
            if status == 404:
                return LLMError(
                    f"The provider does not know the model {self.settings.model!r} (HTTP 404).",
                    "llm_not_found",
                    404,
                ), None
            if status == 429:
                return LLMError(
                    f"The provider is rate limiting requests (HTTP 429){after}.",
                    "llm_rate_limited",
                    429,
                ), wait
            if status >= 500 or status == 408:
                return LLMError(
                    f"The provider is unavailable (HTTP {status}){after}.",
                    "llm_unavailable",
                    status,
                ), wait
            detail = self._provider_message(exc)
            return LLMError(
                f"The provider refused the request (HTTP {status}): {detail}",
                "llm_bad_request",
                status,
            ), None
        if isinstance(exc, self.timeout_error | TimeoutError | httpx.TimeoutException):
            return LLMError(
                f"The provider did not answer within {self.settings.timeout:g} s.",
                "llm_timeout",
                504,
            ), None
        if isinstance(exc, self.connection_error | httpx.TransportError):
            return LLMError(f"Could not reach the provider{after}.", "llm_unavailable", 502), None
        if isinstance(exc, self.api_error):
            # An error event inside the stream (the SDK raises on a payload with an "error" key).
            detail = self._provider_message(exc)
            return LLMError(f"The provider reported an error: {detail}", "llm_error", 502), None
        return None, None
