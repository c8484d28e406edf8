"""Proofs, bundles and the transparency log over REST (read-only: viewers and up)."""

from __future__ import annotations

import base64

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from cadence_site.api import OrgMemberApi, StrictSerializer
from cadence_site.errors import ApplicationError, NotFoundError
from engine.trust import log, proofs
from engine.trust.bundle import MAX_CONSISTENCY_SIZES, bundle_build
from tenants.roles import Role


def _b64(values: list[bytes]) -> list[str]:
    return [base64.b64encode(v).decode() for v in values]


def _visible_run(request, run_id):
    """The run if the caller may read it (engine/runs/selectors.py: members read their own runs,
    admins every run); another member's run is the same 404 as a missing one."""
    from engine.runs.selectors import run_get_for_user

    return run_get_for_user(
        principal=request.user, role=request.role, run_id=str(run_id), org=request.org
    )


def _proven_run(request, run_id, *, purged_too: bool = False):
    """The run and its proof. With `purged_too`, a run purged by retention that the caller could
    read answers with its proof (its run is then None): engine/retention/models.py."""
    try:
        run = _visible_run(request, run_id)
    except NotFoundError:
        from engine.retention.selectors import purged_run_get_for_user

        purged = purged_run_get_for_user(
            principal=request.user, role=request.role, run_id=run_id, org=request.org
        )
        if purged is None:
            raise
        if not purged_too:
            raise ApplicationError(
                "This run was purged by the organization's retention: its steps and data are "
                "gone. Its proof (…/proof/) and its log entry (…/transparency/inclusion/) remain.",
                "run_purged",
                {"purged_at": purged.purged_at.isoformat()},
                status=410,
            ) from None
        proof = proofs.proof_get(run_id=purged.run_id)
        if proof is None:
            raise
        return None, _sequenced(proof)
    proof = proofs.proof_get(run_id=run.id)
    if proof is None:
        raise NotFoundError(
            "This run has no proof (yet): proofs are made when a run ends.", "proof_not_found"
        )
    return run, _sequenced(proof)


def _sequenced(proof):
    """The proof with its log index (one written moments ago, or left by a crash, is taken into
    the log now)."""
    try:
        return log.proof_in_log(proof)
    except LookupError:
        raise ApplicationError(
            "This run's proof is being taken into the log; try again in a moment.",
            "proof_not_sequenced",
            status=409,
        ) from None


class ProofOutput(serializers.Serializer):
    payload = serializers.JSONField(help_text="The signed statement (RFC 8785 canonical JSON).")
    digest = serializers.CharField()
    signature = serializers.CharField()
    key_name = serializers.CharField()
    key_id = serializers.CharField()
    log_index = serializers.IntegerField(allow_null=True)


class CheckpointOutput(serializers.Serializer):
    origin = serializers.CharField()
    size = serializers.IntegerField()
    root_hash = serializers.CharField(help_text="Base64.")
    checkpoint = serializers.CharField(help_text="The signed note.")
    created_at = serializers.DateTimeField()


class InclusionOutput(serializers.Serializer):
    run = serializers.UUIDField()
    leaf_index = serializers.IntegerField()
    tree_size = serializers.IntegerField()
    leaf_data = serializers.CharField()
    inclusion_path = serializers.ListField(child=serializers.CharField(), help_text="Base64.")
    checkpoint = serializers.CharField(allow_null=True)


ConsistencyOutput = type(
    "ConsistencyOutput",
    (serializers.Serializer,),
    {
        "from": serializers.IntegerField(),
        "to": serializers.IntegerField(),
        "consistency_path": serializers.ListField(child=serializers.CharField()),
    },
)


class RunProofApi(OrgMemberApi):
    @extend_schema(summary="A run's signed execution proof", responses={200: ProofOutput})
    def get(self, request, org_slug, run_id):
        _, proof = _proven_run(request, run_id, purged_too=True)
        return Response(proofs.proof_output(proof))


class BundleQuery(StrictSerializer):
    since = serializers.ListField(
        child=serializers.IntegerField(min_value=1), max_length=MAX_CONSISTENCY_SIZES
    )


class RunBundleApi(OrgMemberApi):
    @extend_schema(
        summary="A run's verification bundle, for the offline verifier",
        parameters=[OpenApiParameter("since", int, many=True, required=False)],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request, org_slug, run_id):
        query = self.validated(BundleQuery, {"since": request.query_params.getlist("since")})
        run, proof = _proven_run(request, run_id)
        return Response(bundle_build(run=run, proof=proof, since=query["since"]))


class CheckpointApi(OrgMemberApi):
    """The latest signed tree head (signed now if the log grew since the last one)."""

    @extend_schema(
        summary="The transparency log's latest signed checkpoint",
        responses={200: CheckpointOutput},
    )
    def get(self, request, org_slug):
        return Response(log.checkpoint_output(log.tree_head_sign()))


class InclusionQuery(StrictSerializer):
    run = serializers.UUIDField()
    size = serializers.IntegerField(min_value=1, required=False)


class InclusionApi(OrgMemberApi):
    @extend_schema(
        summary="Proof that a run is in the transparency log",
        parameters=[InclusionQuery],
        responses={200: InclusionOutput},
    )
    def get(self, request, org_slug):
        query = self.validated(InclusionQuery, request.query_params.dict())
        _, proof = _proven_run(request, query["run"], purged_too=True)
        tree_head = log.tree_head_covering(index=proof.log_index)
        size = query.get("size", tree_head.size)
        if not proof.log_index < size <= log.log_size():
            raise ApplicationError(
                f"size must be above the entry's index {proof.log_index} and at most the log's size.",
                "invalid",
                {"field": "size"},
            )
        return Response(
            {
                "run": str(proof.run_id),
                "leaf_index": proof.log_index,
                "tree_size": size,
                "leaf_data": proof.digest,
                "inclusion_path": _b64(log.log_inclusion(index=proof.log_index, size=size)),
                "checkpoint": tree_head.note if tree_head.size == size else None,
            }
        )


# "from" is a Python keyword, so the class is built from a dict of its fields.
ConsistencyQuery = type(
    "ConsistencyQuery",
    (StrictSerializer,),
    {
        "from": serializers.IntegerField(min_value=0),
        "to": serializers.IntegerField(min_value=0),
    },
)


class ConsistencyApi(OrgMemberApi):
    @extend_schema(
        summary="Proof that one log size is a prefix of another",
        parameters=[ConsistencyQuery],
        responses={200: ConsistencyOutput},
    )
    def get(self, request, org_slug):
        query = self.validated(ConsistencyQuery, request.query_params.dict())
        first, second = query["from"], query["to"]
        size = log.log_size()
        if not first <= second <= size:
            raise ApplicationError(
                f"Need from <= to <= {size} (the log's size).",
                "invalid",
                {"from": first, "to": second},
            )
        return Response(
            {
                "from": first,
                "to": second,
                "consistency_path": _b64(log.log_consistency(size1=first, size2=second)),
            }
        )


class DriftChange(serializers.Serializer):
    area = serializers.CharField()
    path = serializers.CharField()
    before = serializers.JSONField(allow_null=True)
    after = serializers.JSONField(allow_null=True)


class RunDriftOutput(serializers.Serializer):
    run = serializers.UUIDField()
    drifted = serializers.BooleanField(allow_null=True)
    snapshot = serializers.CharField(required=False)
    current = serializers.CharField(allow_null=True, required=False)
    changes = DriftChange(many=True)


class DriftReportEntry(serializers.Serializer):
    orchestrator = serializers.UUIDField()
    slug = serializers.CharField()
    current_snapshot = serializers.CharField()
    outdated_runs = serializers.IntegerField()
    outdated_queued = serializers.IntegerField()
    outdated_snapshots = serializers.ListField(child=serializers.CharField())


class DriftReportOutput(serializers.Serializer):
    results = DriftReportEntry(many=True)


class ReplayMismatch(serializers.Serializer):
    seq = serializers.IntegerField()
    name = serializers.CharField()
    committed = serializers.CharField(allow_null=True)
    replayed = serializers.CharField(allow_null=True)


class ReplayOutput(serializers.Serializer):
    run = serializers.UUIDField()
    matches = serializers.BooleanField()
    steps = serializers.IntegerField()
    mismatches = ReplayMismatch(many=True)
    output_matches = serializers.BooleanField()
    error = serializers.CharField(allow_blank=True)


class RunDriftApi(OrgMemberApi):
    @extend_schema(
        summary="Whether a run's definition differs from its orchestrator's current one",
        responses={200: RunDriftOutput},
    )
    def get(self, request, org_slug, run_id):
        from engine.models import Run
        from engine.trust.drift import run_drift

        visible = _visible_run(request, run_id)
        run = Run.objects.select_related("orchestrator__llm_config", "snapshot").get(pk=visible.pk)
        return Response({"run": str(run.id), **run_drift(run=run)})


class DriftReportApi(OrgMemberApi):
    @extend_schema(
        summary="Runs and queued work on outdated definitions, per orchestrator",
        responses={200: DriftReportOutput},
    )
    def get(self, request, org_slug):
        from engine.trust.drift import drift_report
        from orchestrators.models import OrchestratorInstance
        from tenants.teams.scoping import scoped

        # The orchestrators the caller may see (tenants/teams/scoping.py).
        instances = scoped(OrchestratorInstance.objects.all(), self.scope(request))
        return Response({"results": drift_report(instances=instances)})


class RunProofReplayApi(OrgMemberApi):
    """Re-execute the run from its snapshot and recorded responses; compare with its proof."""

    required_role = Role.MEMBER

    @extend_schema(
        summary="Re-execute a run from its recorded responses and compare it with its proof",
        request=None,
        responses={200: ReplayOutput},
    )
    def post(self, request, org_slug, run_id):
        from engine.trust.replay import replay_against_proof

        run, proof = _proven_run(request, run_id)
        return Response(replay_against_proof(run=run, proof=proof))
