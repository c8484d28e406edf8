"""The response bodies of the runs API, for the OpenAPI schema (engine/runs/export.py builds them)."""

from __future__ import annotations

from rest_framework import serializers

from engine.models import Run


class OrchestratorRefOutput(serializers.Serializer):
    id = serializers.UUIDField(allow_null=True)
    slug = serializers.CharField()


class RunErrorOutput(serializers.Serializer):
    code = serializers.CharField(allow_blank=True)
    message = serializers.CharField()


class RunOutput(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=Run.Status.choices)
    trigger = serializers.ChoiceField(choices=Run.Trigger.choices)
    orchestrator = OrchestratorRefOutput()
    conversation = serializers.UUIDField(allow_null=True)
    principal = serializers.CharField(allow_blank=True)
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.FloatField(allow_null=True)
    usage = serializers.JSONField()
    error = RunErrorOutput(allow_null=True)
    replay_of = serializers.UUIDField(allow_null=True, help_text="The run this one replays.")
    replay_step = serializers.IntegerField(
        allow_null=True, help_text="The step a replay re-ran (or re-ran the run from)."
    )


class RunDetailOutput(RunOutput):
    input = serializers.JSONField()
    output = serializers.CharField(allow_blank=True)
    config_hash = serializers.CharField(allow_blank=True)
    environment = serializers.JSONField(
        help_text="Orchestrator version and hash, framework, LLM configuration, plugins, process."
    )


class RunPageOutput(serializers.Serializer):
    results = RunOutput(many=True)
    next_cursor = serializers.CharField(
        allow_null=True, help_text="Pass as `cursor` for the next page; null on the last one."
    )


class StepErrorOutput(serializers.Serializer):
    type = serializers.CharField(allow_blank=True)
    message = serializers.CharField(allow_blank=True)
    stack = serializers.CharField(allow_blank=True)


class StepResourcesOutput(serializers.Serializer):
    cpu_ms = serializers.FloatField(allow_null=True)
    memory_kb = serializers.IntegerField(allow_null=True)


class StepOutput(serializers.Serializer):
    seq = serializers.IntegerField()
    parent = serializers.IntegerField(allow_null=True, help_text="The parent step's `seq`.")
    name = serializers.CharField()
    kind = serializers.CharField(
        help_text="note, sync, split, child, sequence, llm_call, tool_call or step"
    )
    status = serializers.CharField(help_text="running, completed, failed or interrupted")
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField()
    duration_ms = serializers.FloatField(allow_null=True)
    inputs = serializers.JSONField(help_text="What it read; null when not recorded.")
    outputs = serializers.JSONField(help_text="What it wrote or returned; null when not recorded.")
    detail = serializers.JSONField()
    llm = serializers.JSONField(
        help_text="Model calls: provider, model, parameters, tokens_in, tokens_out, ttft_ms.",
    )
    error = StepErrorOutput(allow_null=True)
    resources = StepResourcesOutput()
    truncated = serializers.BooleanField(
        help_text="Whether the row holds a truncated copy; the payload endpoint has it whole."
    )


class StepListOutput(serializers.Serializer):
    results = StepOutput(many=True)


class StepPayloadOutput(serializers.Serializer):
    seq = serializers.IntegerField()
    data = serializers.JSONField(help_text="The step's whole inputs, outputs and detail.")


class RunExportOutput(serializers.Serializer):
    run = RunDetailOutput(required=False)
    steps = StepOutput(many=True, required=False)
    resourceSpans = serializers.JSONField(  # noqa: N815 - OTLP's own field name
        required=False, help_text="With `as=otlp`: the run as one OTLP/JSON trace."
    )


class LineageNodeOutput(serializers.Serializer):
    seq = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.CharField()
    status = serializers.CharField(allow_null=True)


class LineageEdgeOutput(serializers.Serializer):
    # "from" is a Python keyword: declared below.
    to = serializers.IntegerField(help_text="The step that read the field (or merged it).")
    field = serializers.CharField()

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.IntegerField(
            allow_null=True, help_text="The step that wrote the value; null: the run's input."
        )
        return fields


class LineageGraphOutput(serializers.Serializer):
    run = serializers.UUIDField()
    nodes = LineageNodeOutput(many=True)
    edges = LineageEdgeOutput(many=True)


class LineageChainItemOutput(serializers.Serializer):
    seq = serializers.IntegerField(allow_null=True, help_text="null: the run's input.")
    name = serializers.CharField()
    kind = serializers.CharField(help_text="A step's kind, or input.")
    field = serializers.CharField(
        allow_null=True, help_text="null: the writer read no field; the value came with the input."
    )
    value_preview = serializers.CharField(help_text="The value as JSON, cut at 200 characters.")


class LineageChainOutput(serializers.Serializer):
    run = serializers.UUIDField()
    step = serializers.IntegerField()
    field = serializers.CharField()
    chain = LineageChainItemOutput(many=True)


class StepReplayOutput(serializers.Serializer):
    id = serializers.UUIDField(help_text="The replay: a run of its own (trigger replay).")
    status = serializers.ChoiceField(choices=Run.Status.choices)
    replay_of = serializers.UUIDField()
    step = serializers.IntegerField(required=False, help_text="The step re-run alone.")
    from_step = serializers.IntegerField(required=False, help_text="The step re-run from.")
    live = serializers.BooleanField()
    diff = serializers.DictField(
        child=serializers.JSONField(),
        help_text='{field: {"before": original, "after": replayed}} for every output that differs.',
    )
    error = RunErrorOutput(allow_null=True)


class RunLogOutput(serializers.Serializer):
    cursor = serializers.IntegerField(
        help_text="Its place among the run's frames (the run socket's cursor); lines come in order."
    )
    org = serializers.CharField(help_text="The organization's slug.")
    run = serializers.UUIDField()
    step = serializers.IntegerField(
        allow_null=True, help_text="The `seq` of the step it was logged in; null outside any."
    )
    level = serializers.ChoiceField(choices=["debug", "info", "warning", "error", "critical"])
    logger = serializers.CharField(allow_blank=True, help_text="The Python logger's name.")
    message = serializers.CharField(
        allow_blank=True, help_text="Secrets redacted; at most 4,000 characters, then marked."
    )
    at = serializers.DateTimeField()
    worker = serializers.CharField(
        allow_blank=True, help_text="The process: CADENCE_WORKER_ID, else <host>:<pid>."
    )


class RunLogPageOutput(serializers.Serializer):
    results = RunLogOutput(many=True)
    next_cursor = serializers.CharField(
        allow_null=True, help_text="Pass as `cursor` for the next page; null on the last one."
    )
