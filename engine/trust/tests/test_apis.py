"""Proof, bundle and transparency endpoints: answers, outsiders refused, bad input a 4xx."""

from __future__ import annotations

import base64

import pytest
from django_tenants.utils import schema_context

from engine.trust import signing
from engine.trust.verify_bundle import (
    leaf_hash,
    open_checkpoint,
    verify_bundle,
    verify_consistency,
    verify_inclusion,
)

pytestmark = pytest.mark.django_db


def _urls(run_id):
    return [
        f"/api/v1/orgs/alpha/runs/{run_id}/proof/",
        f"/api/v1/orgs/alpha/runs/{run_id}/bundle/",
        "/api/v1/orgs/alpha/transparency/checkpoint/",
        f"/api/v1/orgs/alpha/transparency/inclusion/?run={run_id}",
        "/api/v1/orgs/alpha/transparency/consistency/?from=0&to=1",
    ]


def test_a_viewer_gets_a_bundle_that_verifies(world, as_key, proven_run):
    run, proof = proven_run(owner_key=world.alpha.key_ids["viewer"])
    api = as_key(world.alpha.keys["viewer"])
    body = api.get(f"/api/v1/orgs/alpha/runs/{run.id}/bundle/").json()
    assert verify_bundle(body, signing.keyring().verifiers).failures == []
    assert api.get(f"/api/v1/orgs/alpha/runs/{run.id}/proof/").json()["digest"] == proof.digest


def test_checkpoint_inclusion_and_consistency_answer_per_rfc_9162(world, as_key, proven_run):
    from engine.trust import log

    with schema_context("org_alpha"):
        base = log.log_size()  # committed runs of other tests may be in the log already
    runs = [proven_run(owner_key=world.alpha.key_ids["member"]) for _ in range(3)]
    api = as_key(world.alpha.keys["member"])
    first = api.get("/api/v1/orgs/alpha/transparency/checkpoint/").json()
    keys = signing.keyring().verifiers
    old = open_checkpoint(first["checkpoint"], keys)
    assert (old.size, first["origin"]) == (base + 3, "localhost/cadence/orgs/alpha/log")
    run, proof = runs[1]
    inclusion = api.get(f"/api/v1/orgs/alpha/transparency/inclusion/?run={run.id}").json()
    assert inclusion["leaf_index"] == proof.log_index
    verify_inclusion(
        inclusion["leaf_index"],
        inclusion["tree_size"],
        leaf_hash(bytes.fromhex(inclusion["leaf_data"])),
        [base64.b64decode(h) for h in inclusion["inclusion_path"]],
        old.root,
    )
    proven_run()
    new = open_checkpoint(
        api.get("/api/v1/orgs/alpha/transparency/checkpoint/").json()["checkpoint"], keys
    )
    consistency = api.get(
        f"/api/v1/orgs/alpha/transparency/consistency/?from={base + 3}&to={base + 4}"
    ).json()
    path = [base64.b64decode(h) for h in consistency["consistency_path"]]
    verify_consistency(base + 3, base + 4, path, old.root, new.root)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("consistency/?from=5&to=2", "from"),
        ("consistency/?from=-1&to=2", "from"),
        ("consistency/?from=a&to=2", "from"),
        ("consistency/?to=2", "from"),
        ("inclusion/?run=not-a-uuid", "run"),
        ("inclusion/?run=\x00", "run"),
        ("consistency/?from=0&to=1&extra=1", "extra"),
    ],
)
def test_bad_queries_are_a_clear_400(world, as_key, proven_run, query, field):
    proven_run()
    response = as_key(world.alpha.keys["viewer"]).get(f"/api/v1/orgs/alpha/transparency/{query}")
    assert response.status_code == 400
    body = response.json()["error"]
    assert set(body) == {"code", "message", "details"}
    assert field in str(body["details"]) or field in body["message"]


def test_an_unknown_or_unproven_run_is_a_404(world, as_key, make_run):
    api = as_key(world.alpha.keys["viewer"])
    run, _ = make_run(owner_key=world.alpha.key_ids["viewer"])
    assert api.get(f"/api/v1/orgs/alpha/runs/{run.id}/proof/").json()["error"]["code"] == (
        "proof_not_found"
    )
    missing = "00000000-0000-0000-0000-000000000000"
    assert api.get(f"/api/v1/orgs/alpha/runs/{missing}/bundle/").status_code == 404


def test_another_members_run_is_a_404_on_every_proof_path(world, as_key, as_user, api, proven_run):
    run, _ = proven_run(owner_key=world.alpha.key_ids["member"])
    private = [url for url in _urls(run.id) if "checkpoint" not in url and "consistency" not in url]

    for url in private:
        assert as_key(world.alpha.keys["viewer"]).get(url).status_code == 404, url
        assert as_key(world.alpha.keys["member"]).get(url).status_code == 200, url
        assert as_key(world.alpha.keys["admin"]).get(url).status_code == 200, url
    api.credentials()
    other_member = as_user(world.alpha.users["viewer"])
    for url in private:
        assert other_member.get(url).status_code == 404, url


def test_another_organizations_key_and_user_and_a_non_member_get_404(
    world, as_key, as_user, api, proven_run
):
    run, _ = proven_run()
    with schema_context("org_alpha"):
        from engine.trust.models import TreeHead

        heads = TreeHead.objects.count()
    for url in _urls(run.id):
        assert as_key(world.bravo.keys["owner"]).get(url).status_code == 404, url
    api.credentials()
    for user in (world.bravo.users["owner"], world.outsider):
        client = as_user(user)
        for url in _urls(run.id):
            assert client.get(url).status_code == 404, url
    api.logout()
    for url in _urls(run.id):
        assert api.get(url).status_code in (401, 403), url
    with schema_context("org_alpha"):
        assert TreeHead.objects.count() == heads  # nothing signed for outsiders


def test_writes_are_not_allowed_on_proof_paths(world, as_key, proven_run):
    run, proof = proven_run()
    api = as_key(world.alpha.keys["owner"])
    for url in _urls(run.id):
        assert api.post(url, {}, format="json").status_code == 405
        assert api.delete(url).status_code == 405
