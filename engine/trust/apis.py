"""Proofs, bundles and the transparency log over REST (read-only: viewers and up)."""

from __future__ import annotations

import base64

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from cadence_site.api import OrgMemberApi, StrictSerializer
from cadence_site.errors import ApplicationError, NotFoundError
from engine.trust import log, proofs
from engine.trust.bundle import MAX_CONSISTENCY_SIZES, bundle_build


def _b64(values: list[bytes]) -> list[str]:
    return [base64.b64encode(v).decode() for v in values]


def _proven_run(run_id):
    from engine.models import Run

    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        raise NotFoundError("No such run.", "run_not_found")
    proof = proofs.proof_get(run_id=run.id)
    if proof is None:
        raise NotFoundError(
            "This run has no proof (yet): proofs are made when a run ends.", "proof_not_found"
        )
    return run, proof


class RunProofApi(OrgMemberApi):
    def get(self, request, org_slug, run_id):
        _, proof = _proven_run(run_id)
        return Response(proofs.proof_output(proof))


class BundleQuery(StrictSerializer):
    since = serializers.ListField(
        child=serializers.IntegerField(min_value=1), max_length=MAX_CONSISTENCY_SIZES
    )


class RunBundleApi(OrgMemberApi):
    @extend_schema(parameters=[OpenApiParameter("since", int, many=True, required=False)])
    def get(self, request, org_slug, run_id):
        query = self.validated(BundleQuery, {"since": request.query_params.getlist("since")})
        run, proof = _proven_run(run_id)
        return Response(bundle_build(run=run, proof=proof, since=query["since"]))


class CheckpointApi(OrgMemberApi):
    """The latest signed tree head (signed now if the log grew since the last one)."""

    def get(self, request, org_slug):
        return Response(log.checkpoint_output(log.tree_head_sign()))


class InclusionQuery(StrictSerializer):
    run = serializers.UUIDField()
    size = serializers.IntegerField(min_value=1, required=False)


class InclusionApi(OrgMemberApi):
    @extend_schema(parameters=[InclusionQuery])
    def get(self, request, org_slug):
        query = self.validated(InclusionQuery, request.query_params.dict())
        _, proof = _proven_run(query["run"])
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
    @extend_schema(parameters=[ConsistencyQuery])
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


class RunDriftApi(OrgMemberApi):
    def get(self, request, org_slug, run_id):
        from engine.models import Run
        from engine.trust.drift import run_drift

        run = (
            Run.objects.select_related("orchestrator__llm_config", "snapshot")
            .filter(pk=run_id)
            .first()
        )
        if run is None:
            raise NotFoundError("No such run.", "run_not_found")
        return Response({"run": str(run.id), **run_drift(run=run)})


class DriftReportApi(OrgMemberApi):
    def get(self, request, org_slug):
        from engine.trust.drift import drift_report

        return Response({"results": drift_report()})
