"""REST for runs: the filtered list, a run, its steps, a step's whole payload, the export.

Readable by every member and viewer of the organization, each seeing the runs the privacy rule
of engine/runs/selectors.py lets them see (admins and owners: all).
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from cadence_site.api import OrgMemberApi, StrictSerializer
from cadence_site.errors import ApplicationError
from engine.runs import export, schema, selectors
from tenants.roles import Role


class RunsApi(OrgMemberApi):
    read_role = Role.VIEWER

    def run(self, request, run_id):
        return selectors.run_get_for_user(
            principal=request.user, role=request.role, run_id=run_id, org=request.org
        )


_LIST_PARAMETERS = [
    OpenApiParameter(name, OpenApiTypes.STR, description=description)
    for name, description in (
        ("status", "running, succeeded, failed or cancelled"),
        ("orchestrator", "an orchestrator's id or slug"),
        ("trigger", "chat, rest, openai, invoke, admin, queue or replay"),
        ("since", "ISO 8601 time: runs started at or after it"),
        ("until", "ISO 8601 time: runs started before it"),
        ("slower_than_ms", "runs that took longer than this many milliseconds"),
        ("error_code", "runs that failed with this error code"),
        (
            "q",
            "text (3-200 characters, any case) in the run's error, its steps' names and errors, "
            "or its log lines; over every run you may see, newest first, every match found "
            "(engine/runs/search.py)",
        ),
        ("cursor", "the next_cursor of the previous page"),
        ("limit", "runs per page, 1-200 (default 50)"),
    )
]


class RunListApi(RunsApi):
    @extend_schema(
        summary="Runs you may see, newest first, filtered",
        description=(
            "Filters combine (AND). Pages are keyset pages on (started_at, id): a deep page "
            "costs what the first does, and no total is counted. Measured at 1,000,000 runs "
            "in one organization by benchmarks/run_list.py."
        ),
        parameters=_LIST_PARAMETERS,
        responses={200: schema.RunPageOutput},
    )
    def get(self, request, org_slug):
        runs, cursor = selectors.run_list(
            principal=request.user,
            role=request.role,
            params={k: request.query_params.get(k, "") for k in request.query_params},
            org=request.org,
        )
        return Response(
            {"results": [export.run_output(run) for run in runs], "next_cursor": cursor}
        )


class RunDetailApi(RunsApi):
    @extend_schema(summary="One run", responses={200: schema.RunDetailOutput})
    def get(self, request, org_slug, run_id):
        return Response(export.run_output(self.run(request, run_id), detail=True))


class RunStepsApi(RunsApi):
    @extend_schema(summary="A run's steps in order", responses={200: schema.StepListOutput})
    def get(self, request, org_slug, run_id):
        steps = selectors.run_steps(run=self.run(request, run_id))
        return Response({"results": [export.step_output(step) for step in steps]})


class StepPayloadApi(RunsApi):
    @extend_schema(summary="A step's whole payload", responses={200: schema.StepPayloadOutput})
    def get(self, request, org_slug, run_id, seq):
        step = selectors.step_get(run=self.run(request, run_id), seq=seq)
        return Response({"seq": step.seq, "data": selectors.step_payload(step=step)})


class RunExportApi(RunsApi):
    # `as`, not `format`: DRF reads ?format= for content negotiation.
    @extend_schema(
        summary="A run exported as JSON or OTLP/JSON",
        parameters=[OpenApiParameter("as", OpenApiTypes.STR, enum=["json", "otlp"])],
        responses={200: schema.RunExportOutput},
    )
    def get(self, request, org_slug, run_id):
        fmt = request.query_params.get("as", "json")
        if fmt not in ("json", "otlp"):
            raise ApplicationError("as must be json or otlp.", "invalid_format", {"field": "as"})
        run = self.run(request, run_id)
        return Response(export.run_otlp(run) if fmt == "otlp" else export.run_export(run))


class RunLineageApi(RunsApi):
    @extend_schema(
        summary="Where each value a step read came from: the run's graph, or one value's chain",
        parameters=[
            OpenApiParameter("step", OpenApiTypes.INT, description="a step's seq (with field)"),
            OpenApiParameter("field", OpenApiTypes.STR, description="a score field (with step)"),
        ],
        responses={
            200: PolymorphicProxySerializer(
                component_name="RunLineageOutput",
                serializers=[schema.LineageGraphOutput, schema.LineageChainOutput],
                resource_type_field_name=None,
            )
        },
    )
    def get(self, request, org_slug, run_id):
        run = self.run(request, run_id)
        params = {k: request.query_params.get(k, "") for k in request.query_params}
        return Response(selectors.run_lineage(run=run, params=params))


class RunReplayApi(RunsApi):
    required_role = Role.ADMIN

    class InputSerializer(StrictSerializer):
        step = serializers.IntegerField(min_value=1, max_value=10**9, required=False)
        from_step = serializers.IntegerField(min_value=1, max_value=10**9, required=False)
        live = serializers.BooleanField(default=False)

        def validate(self, data):
            if ("step" in data) == ("from_step" in data):
                raise serializers.ValidationError(
                    {"step": ["Give exactly one of step and from_step."]}
                )
            return data

    @extend_schema(
        summary="Replay one step (or the run from a step) as a new run, and diff its outputs",
        request=InputSerializer,
        responses={201: schema.StepReplayOutput},
    )
    def post(self, request, org_slug, run_id):
        from engine.runs.replay import run_replay

        data = self.validated(self.InputSerializer, request.data)
        run = self.run(request, run_id)
        body = run_replay(run=run, org=request.org, principal=request.user, **data)
        return Response(body, status=201)


class RunLogsApi(RunsApi):
    @extend_schema(
        summary="A run's log lines in order",
        parameters=[
            OpenApiParameter(
                "level",
                OpenApiTypes.STR,
                enum=["debug", "info", "warning", "error", "critical"],
                description="this level and above",
            ),
            OpenApiParameter("step", OpenApiTypes.INT, description="one step's lines (its seq)"),
            OpenApiParameter("cursor", OpenApiTypes.STR, description="the previous next_cursor"),
            OpenApiParameter("limit", OpenApiTypes.INT, description="lines per page, 1-1000"),
        ],
        responses={200: schema.RunLogPageOutput},
    )
    def get(self, request, org_slug, run_id):
        run = self.run(request, run_id)
        lines, cursor = selectors.run_logs(
            run=run, params={k: request.query_params.get(k, "") for k in request.query_params}
        )
        return Response(
            {
                "results": [
                    export.log_output(line, run_id=str(run.id), org_slug=request.org.slug)
                    for line in lines
                ],
                "next_cursor": cursor,
            }
        )
