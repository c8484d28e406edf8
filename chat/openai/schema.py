"""The /v1 surface in the OpenAPI schema: its paths and components, written out.

The views are plain async Django views (drf-spectacular cannot introspect them), and the
shapes are OpenAI's, so they are declared here and merged into /api/schema/ by
``cadence_site.openapi.postprocess``. The schema test calls every operation listed here.
"""

from __future__ import annotations

from typing import Any

from chat.openai import MAX_MESSAGES
from chat.services import MAX_CONTENT


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    descriptions = {
        400: "Invalid request: `param` names the parameter.",
        401: "Missing, unknown, revoked or expired API key.",
        403: "The key's organization is suspended, or its role may not do this.",
        404: "No such model (orchestrator) in the key's organization, or not ready; or no "
        "such response of this key.",
        405: "Method not allowed.",
        413: "The request body exceeds the body limit.",
        429: "A rate limit of the organization's plan; `Retry-After` says when to retry.",
        502: "The orchestrator's model failed.",
        504: "The orchestrator's model timed out.",
    }
    return {str(s): _json(_ref("OpenAIError"), descriptions[s]) for s in statuses}


_SECURITY = [{"apiKey": []}]

_USAGE = {
    "type": "object",
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
    },
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
}

_TOOL_CALL = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
            "required": ["name", "arguments"],
        },
    },
    "required": ["id", "type", "function"],
}

_CONTENT = {
    "oneOf": [
        {"type": "string", "maxLength": MAX_CONTENT},
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
                "required": ["type", "text"],
            },
        },
        {"type": "null"},
    ]
}

_FUNCTION_TOOL = {
    "type": "object",
    "properties": {
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                "description": {"type": "string"},
                "parameters": {"type": "object"},
                "strict": {"type": ["boolean", "null"]},
            },
            "required": ["name"],
        },
    },
    "required": ["type", "function"],
}


_TEXT_PARTS = {
    "oneOf": [
        {"type": "string", "maxLength": MAX_CONTENT},
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"enum": ["input_text", "output_text"]},
                    "text": {"type": "string"},
                },
                "required": ["type", "text"],
            },
        },
    ]
}

_INPUT_ITEM = {
    "oneOf": [
        {
            "type": "object",
            "description": "A message (`type` may be omitted).",
            "properties": {
                "type": {"const": "message"},
                "role": {"enum": ["user", "assistant", "system", "developer"]},
                "content": _TEXT_PARTS,
            },
            "required": ["role", "content"],
        },
        {
            "type": "object",
            "description": "A call of a client function made earlier (as the Agents SDK resends it).",
            "properties": {
                "type": {"const": "function_call"},
                "call_id": {"type": "string"},
                "name": {"type": "string"},
                "arguments": {"type": "string"},
            },
            "required": ["type", "call_id", "name", "arguments"],
        },
        {
            "type": "object",
            "description": "The result of a client function call.",
            "properties": {
                "type": {"const": "function_call_output"},
                "call_id": {"type": "string"},
                "output": _TEXT_PARTS,
            },
            "required": ["type", "call_id", "output"],
        },
    ]
}

_RESPONSE_TOOL = {
    "type": "object",
    "properties": {
        "type": {"const": "function"},
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
        "description": {"type": ["string", "null"]},
        "parameters": {"type": ["object", "null"]},
        "strict": {"type": ["boolean", "null"]},
    },
    "required": ["type", "name"],
}

_OUTPUT_ITEM = {
    "oneOf": [
        {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "type": {"const": "message"},
                "role": {"const": "assistant"},
                "status": {"enum": ["in_progress", "completed", "incomplete"]},
                "content": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "type": {"const": "output_text"},
                            "text": {"type": "string"},
                            "annotations": {"type": "array"},
                            "logprobs": {"type": "array"},
                        },
                        "required": ["type", "text", "annotations"],
                    },
                },
            },
            "required": ["id", "type", "role", "status", "content"],
        },
        {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "type": {"const": "function_call"},
                "call_id": {"type": "string"},
                "name": {"type": "string"},
                "arguments": {"type": "string"},
                "status": {"enum": ["in_progress", "completed", "incomplete"]},
            },
            "required": ["id", "type", "call_id", "name", "arguments", "status"],
        },
    ]
}

_METADATA = {
    "type": ["object", "null"],
    "maxProperties": 16,
    "additionalProperties": {"type": "string", "maxLength": 512},
}


def openai_components() -> dict[str, Any]:
    return {
        "OpenAIError": {
            "type": "object",
            "description": "OpenAI's error shape, used by every /v1 error.",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                        "code": {"type": ["string", "null"]},
                    },
                    "required": ["message", "type", "param", "code"],
                }
            },
            "required": ["error"],
        },
        "OpenAIModel": {
            "type": "object",
            "description": "A ready orchestrator of the key's organization.",
            "properties": {
                "id": {"type": "string", "description": "The orchestrator's slug."},
                "object": {"const": "model"},
                "created": {"type": "integer"},
                "owned_by": {"type": "string", "description": "The organization's slug."},
            },
            "required": ["id", "object", "created", "owned_by"],
            "additionalProperties": False,
        },
        "OpenAIModelList": {
            "type": "object",
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": _ref("OpenAIModel")},
            },
            "required": ["object", "data"],
            "additionalProperties": False,
        },
        "ChatCompletionRequest": {
            "type": "object",
            "description": "OpenAI's chat.completions request. `model` is an orchestrator's "
            "slug; the last message must be the user's.",
            "properties": {
                "model": {"type": "string"},
                "messages": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_MESSAGES,
                    "items": {
                        "type": "object",
                        "properties": {
                            "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
                            "content": _CONTENT,
                            "name": {"type": "string"},
                            "tool_calls": {"type": "array", "items": _TOOL_CALL},
                            "tool_call_id": {"type": "string"},
                        },
                        "required": ["role"],
                    },
                },
                "stream": {"type": ["boolean", "null"]},
                "stream_options": {
                    "type": ["object", "null"],
                    "properties": {"include_usage": {"type": ["boolean", "null"]}},
                },
                "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
                "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                "n": {"type": ["integer", "null"], "const": 1},
                "max_tokens": {"type": ["integer", "null"], "minimum": 1},
                "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
                "stop": {
                    "oneOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                        {"type": "null"},
                    ]
                },
                "seed": {"type": ["integer", "null"]},
                "presence_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
                "frequency_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
                "user": {"type": "string", "maxLength": 256},
                "metadata": {
                    "type": ["object", "null"],
                    "maxProperties": 16,
                    "additionalProperties": {"type": "string", "maxLength": 512},
                },
                "response_format": {
                    "type": ["object", "null"],
                    "properties": {
                        "type": {"enum": ["text", "json_object", "json_schema"]},
                        "json_schema": {"type": "object"},
                    },
                    "required": ["type"],
                },
                "tools": {"type": ["array", "null"], "items": _FUNCTION_TOOL, "maxItems": 128},
                "tool_choice": {
                    "oneOf": [
                        {"enum": ["none", "auto", "required"]},
                        {"type": "object"},
                        {"type": "null"},
                    ]
                },
                "parallel_tool_calls": {"type": ["boolean", "null"]},
                "store": {"type": ["boolean", "null"]},
                "cadence": {
                    "type": "object",
                    "description": "Cadence's extension: store the exchange in a conversation "
                    "of the calling key.",
                    "properties": {"conversation_id": {"type": "string", "format": "uuid"}},
                    "additionalProperties": False,
                },
            },
            "required": ["model", "messages"],
            "additionalProperties": False,
            "examples": [
                {"model": "assistant", "messages": [{"role": "user", "content": "Hello"}]}
            ],
        },
        "ChatCompletion": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "description": "`chatcmpl-<run id>`."},
                "object": {"const": "chat.completion"},
                "created": {"type": "integer"},
                "model": {"type": "string"},
                "choices": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "index": {"type": "integer"},
                            "message": {
                                "type": "object",
                                "properties": {
                                    "role": {"const": "assistant"},
                                    "content": {"type": ["string", "null"]},
                                    "refusal": {"type": ["string", "null"]},
                                    "tool_calls": {"type": "array", "items": _TOOL_CALL},
                                },
                                "required": ["role", "content"],
                            },
                            "logprobs": {"type": "null"},
                            "finish_reason": {"enum": ["stop", "length", "tool_calls"]},
                        },
                        "required": ["index", "message", "finish_reason"],
                    },
                },
                "usage": _USAGE,
                "system_fingerprint": {"type": ["string", "null"]},
                "cadence": {
                    "type": "object",
                    "properties": {
                        "conversation_id": {"type": "string"},
                        "user_message_id": {"type": ["string", "null"]},
                        "assistant_message_id": {"type": ["string", "null"]},
                    },
                },
            },
            "required": ["id", "object", "created", "model", "choices", "usage"],
            "additionalProperties": False,
        },
        "ResponseCreateRequest": {
            "type": "object",
            "description": "OpenAI's Responses request. `model` is an orchestrator's slug; "
            "`input` ends with a user message or function_call_output items.",
            "properties": {
                "model": {"type": "string"},
                "input": {
                    "oneOf": [
                        {"type": "string", "maxLength": MAX_CONTENT},
                        {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_MESSAGES,
                            "items": _INPUT_ITEM,
                        },
                    ]
                },
                "instructions": {"type": ["string", "null"], "maxLength": MAX_CONTENT},
                "previous_response_id": {
                    "type": ["string", "null"],
                    "description": "A stored response of the same API key (`resp_…`).",
                },
                "tools": {"type": ["array", "null"], "items": _RESPONSE_TOOL, "maxItems": 128},
                "tool_choice": {
                    "oneOf": [
                        {"enum": ["none", "auto", "required"]},
                        {
                            "type": "object",
                            "properties": {
                                "type": {"const": "function"},
                                "name": {"type": "string"},
                            },
                            "required": ["type", "name"],
                        },
                        {"type": "null"},
                    ]
                },
                "parallel_tool_calls": {"type": ["boolean", "null"]},
                "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
                "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                "max_output_tokens": {"type": ["integer", "null"], "minimum": 16},
                "text": {
                    "type": ["object", "null"],
                    "properties": {
                        "format": {
                            "type": "object",
                            "properties": {
                                "type": {"enum": ["text", "json_object", "json_schema"]},
                                "name": {"type": "string"},
                                "schema": {"type": "object"},
                                "strict": {"type": ["boolean", "null"]},
                                "description": {"type": "string"},
                            },
                            "required": ["type"],
                        }
                    },
                },
                "stream": {"type": ["boolean", "null"]},
                "store": {
                    "type": ["boolean", "null"],
                    "description": "Default true: kept for retrieval and previous_response_id.",
                },
                "metadata": _METADATA,
                "user": {"type": ["string", "null"], "maxLength": 256},
            },
            "required": ["model", "input"],
            "additionalProperties": False,
            "examples": [{"model": "assistant", "input": "Hello"}],
        },
        "Response": {
            "type": "object",
            "description": "OpenAI's Response object; `id` is `resp_<run id>`.",
            "properties": {
                "id": {"type": "string", "pattern": "^resp_[0-9a-f]{32}$"},
                "object": {"const": "response"},
                "created_at": {"type": "integer"},
                "status": {"enum": ["in_progress", "completed", "incomplete", "failed"]},
                "model": {"type": "string"},
                "output": {"type": "array", "items": _OUTPUT_ITEM},
                "usage": {
                    "type": ["object", "null"],
                    "properties": {
                        "input_tokens": {"type": "integer"},
                        "input_tokens_details": {"type": "object", "additionalProperties": True},
                        "output_tokens": {"type": "integer"},
                        "output_tokens_details": {"type": "object", "additionalProperties": True},
                        "total_tokens": {"type": "integer"},
                    },
                    "required": ["input_tokens", "output_tokens", "total_tokens"],
                },
                "error": {
                    "type": ["object", "null"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                },
                "incomplete_details": {
                    "type": ["object", "null"],
                    "properties": {"reason": {"type": ["string", "null"]}},
                },
                "previous_response_id": {"type": ["string", "null"]},
                "instructions": {"type": ["string", "null"]},
                "metadata": _METADATA,
                "tools": {"type": "array", "items": _RESPONSE_TOOL},
                "tool_choice": {
                    "oneOf": [{"type": "string"}, {"type": "object", "additionalProperties": True}]
                },
                "parallel_tool_calls": {"type": "boolean"},
                "temperature": {"type": ["number", "null"]},
                "top_p": {"type": ["number", "null"]},
                "max_output_tokens": {"type": ["integer", "null"]},
                "text": {"type": "object", "additionalProperties": True},
                "store": {"type": "boolean"},
                "user": {"type": ["string", "null"]},
                "background": {"type": "boolean"},
                "reasoning": {"type": ["object", "null"], "additionalProperties": True},
                "service_tier": {"type": ["string", "null"]},
                "truncation": {"type": ["string", "null"]},
            },
            "required": [
                "id",
                "object",
                "created_at",
                "status",
                "model",
                "output",
                "tools",
                "tool_choice",
                "parallel_tool_calls",
            ],
        },
    }


def openai_paths() -> dict[str, Any]:
    return {
        "/v1/models": {
            "get": {
                "operationId": "openai_models_list",
                "summary": "List the organization's ready orchestrators as models",
                "tags": ["openai"],
                "security": _SECURITY,
                "responses": {
                    "200": _json(_ref("OpenAIModelList"), "The models."),
                    **_errors(401, 403, 429),
                },
            }
        },
        "/v1/models/{model}": {
            "get": {
                "operationId": "openai_models_retrieve",
                "summary": "One ready orchestrator as a model",
                "tags": ["openai"],
                "security": _SECURITY,
                "parameters": [
                    {
                        "name": "model",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "The orchestrator's slug.",
                    }
                ],
                "responses": {
                    "200": _json(_ref("OpenAIModel"), "The model."),
                    **_errors(401, 403, 404, 429),
                },
            }
        },
        "/v1/chat/completions": {
            "post": {
                "operationId": "openai_chat_completions_create",
                "summary": "One turn with an orchestrator, as OpenAI's chat completions",
                "description": "With `stream: true` the reply is server-sent events: "
                "`chat.completion.chunk` objects, then `data: [DONE]`.",
                "tags": ["openai"],
                "security": _SECURITY,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ChatCompletionRequest")}},
                },
                "responses": {
                    "200": {
                        "description": "The completion, or its chunks as server-sent events.",
                        "content": {
                            "application/json": {"schema": _ref("ChatCompletion")},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors(400, 401, 403, 404, 413, 429, 502, 504),
                },
            }
        },
        "/v1/responses": {
            "post": {
                "operationId": "openai_responses_create",
                "summary": "One turn with an orchestrator, as OpenAI's Responses API",
                "description": "Stored as a turn of a conversation of the calling key (unless "
                "`store: false`); `previous_response_id` continues it. With `stream: true` the "
                "reply is server-sent events named as OpenAI names them (`response.created`, "
                "`response.output_text.delta`, …, `response.completed`).",
                "tags": ["openai"],
                "security": _SECURITY,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ResponseCreateRequest")}},
                },
                "responses": {
                    "200": {
                        "description": "The response, or its events as server-sent events.",
                        "content": {
                            "application/json": {"schema": _ref("Response")},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors(400, 401, 403, 404, 413, 429, 502, 504),
                },
            }
        },
        "/v1/responses/{response_id}": {
            "get": {
                "operationId": "openai_responses_retrieve",
                "summary": "A stored response of the calling key",
                "tags": ["openai"],
                "security": _SECURITY,
                "parameters": [
                    {
                        "name": "response_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "The response's id, `resp_…`.",
                    }
                ],
                "responses": {
                    "200": _json(_ref("Response"), "The response as it was last sent."),
                    **_errors(401, 403, 404, 429),
                },
            }
        },
    }
