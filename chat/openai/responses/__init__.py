"""OpenAI's Responses API on the OpenAI-compatible surface (`/v1/responses`).

`validation.py` checks a request as OpenAI does and turns its input items into chat-format
messages; `store.py` keeps a response as a turn of a conversation of the calling key (the
`previous_response_id` chain); `turn.py` runs it through the one turn pipeline in a task of its
own; `views.py` answers with the Response object or OpenAI's server-sent events. The shapes
follow the official `openai` SDK's `openai.types.responses` models.
"""
