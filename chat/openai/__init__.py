"""The OpenAI-compatible surface: `GET /v1/models`, `GET /v1/models/<id>`, `POST /v1/chat/completions`,
`POST /v1/responses` and `GET /v1/responses/<id>` (`chat/openai/responses/`).

Any OpenAI client talks to an organization's orchestrators with a Cadence API key
(`OpenAI(base_url="<server>/v1", api_key="ck_…")`). The organization comes from the key alone;
`model` is an orchestrator's slug, and `/v1/models` lists the organization's ready orchestrators.

Requests are stateless: the client sends the whole conversation in `messages` (system, developer,
user and assistant messages with string content or a list of `{"type": "text", "text": …}`
parts; the last one must be the user's), the earlier messages are the history the orchestrator
sees. Every turn is recorded as a Run (trigger `openai`); the completion's id is
`chatcmpl-<run id as hex>`.

Extension: storing the exchange in a conversation. An optional body field

    "cadence": {"conversation_id": "<uuid>"}

appends the user's message (stored before the model runs) and the assistant's reply (with its
usage and run) to that conversation. The conversation must belong to the calling API key (the
same ownership rule as the REST chat API) and to the orchestrator named by `model`; otherwise
404 `conversation_not_found`. The history the model sees still comes from `messages` only. With
`extra_body={"cadence": {...}}` the official client sends it as is. A non-streamed response then
carries `"cadence": {"conversation_id", "user_message_id", "assistant_message_id"}`.

Parameters are validated as OpenAI does (`chat/openai/validation.py`): ranges, types, an unknown
parameter or one Cadence cannot honour is a 400 naming it. Sampling parameters and
`response_format` travel to the model as `orchestrators.runtime.ModelOptions` (the LLM
configuration's `max_tokens` caps the request's). `tools` / `tool_choice` declare the client's
own tools: a call of one ends the turn with `finish_reason: "tool_calls"`, and `role: "tool"`
messages continue it. The orchestrator's own tool calls and steps stay internal.

The Responses API (`chat/openai/responses/`) runs the same turn pipeline with the same key,
role, rate-limit and budget rules. Unlike chat completions it keeps state: a response (unless
`store: false`) is a turn of a conversation of the calling key (its input items and reply are
messages; `chat.models.StoredResponse` maps `resp_<run id>` to them and to the response it
continued), and `previous_response_id` continues that chain (another key's id is a 404
`previous_response_not_found`). `instructions` apply to their own turn only, as OpenAI's do.

Errors use OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`:

    400 <OpenAI's codes>        malformed JSON, a missing, wrong, unknown or unsupported parameter
                                (param names it; code: decimal_above_max_value, invalid_type,
                                unknown_parameter, unsupported_parameter, …)
    401 invalid_api_key         missing, unknown, revoked or expired key
    403 org_suspended           the key's organization is suspended
    403 insufficient_role       a viewer key asking for a completion (viewers read, members chat)
    404 model_not_found         unknown slug, another organization's, or not ready (the message says which)
    404 conversation_not_found  the `cadence.conversation_id` extension names no conversation of this key and model
    413 payload_too_large       the body exceeds DATA_UPLOAD_MAX_MEMORY_SIZE (a declared Content-Length
                                over it is refused earlier, by cadence_site.errors.BodySizeLimitMiddleware,
                                in Cadence's own error shape; a chunked body is measured here)
    429 rate_limit_exceeded     over the plan's requests_per_minute (Retry-After says when to retry);
                                every authenticated /v1/ request counts, models listings included
    502/504 (and 429/400)       the orchestrator's model failed (engine.runs.pipeline mapping)

Streaming sends `chat.completion.chunk` objects: the role first, then content deltas, then an
empty delta with the finish reason, then (with `stream_options.include_usage`) a chunk with
`"choices": []` and the usage, then `data: [DONE]`. While nothing has been sent for
CADENCE_SSE_KEEPALIVE_SECONDS (default 15), a `: ping` comment keeps proxies from closing the
connection. A model error after the stream began is sent as a final `data: {"error": …}` (the
official client raises it) followed by `data: [DONE]`.

The turn runs in its own asyncio task that feeds a queue; the response only reads that queue. A
client that goes away therefore stops nothing: the reply is generated and the Run (and the
conversation's messages) recorded to the end.
"""

from __future__ import annotations

MAX_MESSAGES = 200
DEFAULT_KEEPALIVE_SECONDS = 15.0
DEFAULT_REQUESTS_PER_MINUTE = (
    600  # Plan.requests_per_minute's default, for an organization without a plan
)
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# Cadence finish reasons → OpenAI's. The orchestrator's own tool calls stay internal.
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "max_steps": "length",
    "tool_calls": "tool_calls",  # a call of one of the client's own tools (request `tools`)
}
