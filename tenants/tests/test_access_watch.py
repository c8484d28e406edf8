"""A key resolved once is kept while no row it was read from changes, and never past a change.

The watch listens on a real connection to the test database; the changes are committed by other
connections (the ORM's, psql-like raw SQL), as an operator, the admin or a bulk update would.
"""

from __future__ import annotations

import tempfile
import time
from datetime import timedelta

import httpx
import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed

from cadence_site.testing import start_live_server, test_database_url
from tenants import access_watch
from tenants.authentication import api_key_authenticate
from tenants.models import ApiKey, Membership, Organization


@pytest.fixture
def watch(access_watch_running):
    return access_watch_running


@pytest.fixture
def vouched(committed_member):
    """A committed admin of alpha and an admin key they created; removed afterwards."""
    return committed_member("alpha-watch-admin", "admin", key_role="admin")


def _statements(secret: str) -> tuple[int, object]:
    with CaptureQueriesContext(connection) as queries:
        try:
            outcome = api_key_authenticate(secret).role
        except AuthenticationFailed as exc:
            outcome = exc.detail.code
    return len(queries), outcome


def _resolved_twice(secret: str) -> None:
    """Read once, then kept: a later call reads nothing. The notifications of the fixture's own
    rows (just committed) are let arrive first: PostgreSQL delivers a listener's notifications in
    commit order, so once a marker committed now is seen, they all were (under load one came
    after the kept read and was counted as the test's own change)."""
    _committed_elsewhere("SELECT pg_notify('cadence_access', 'schema:nobody')", [])
    first, _ = _statements(secret)
    assert first > 0
    for _ in range(100):
        second, role = _statements(secret)
        if second == 0:
            break
        time.sleep(0.01)
    assert (second, role) == (0, "admin")


def _quiet_stamp():
    """A stamp once the fixture's own notifications have been read (as in _resolved_twice: a
    marker committed after them is seen last): taken while one is unread, a stamp is None (a
    flake seen once in CI, under load)."""
    _committed_elsewhere("SELECT pg_notify('cadence_access', 'schema:nobody')", [])
    deadline = time.monotonic() + 5
    while (stamp := access_watch.stamp()) is None and time.monotonic() < deadline:
        time.sleep(0.001)
    return stamp


def _commit(sql: str, params) -> None:
    with psycopg.connect(test_database_url(), autocommit=True) as other:
        other.execute(sql, params)


def _committed_elsewhere(sql: str, params) -> None:
    """Committed on a connection of its own; returns once this process's watch has seen it
    (its notification's delivery: well under a millisecond on a quiet host)."""
    _seen(lambda: _commit(sql, params))


def _seen(change) -> None:
    seen = access_watch._counts.changes
    change()
    deadline = time.monotonic() + 5
    while access_watch._counts.changes == seen:
        assert time.monotonic() < deadline, "the watch never saw the change"
        time.sleep(0.001)


def test_a_known_key_is_authenticated_without_a_statement(watch, vouched):
    _, key, secret = vouched
    _resolved_twice(secret)
    # Its use being recorded, and the creator logging in, are not access: still nothing read.
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
    get_user_model().objects.filter(pk=key.created_by_id).update(last_login=timezone.now())
    assert _statements(secret) == (0, "admin")


@pytest.mark.parametrize(
    "change, expected",
    [
        ("UPDATE tenants_apikey SET revoked_at = now() WHERE id = %(key)s", "api_key_revoked"),
        ("UPDATE tenants_apikey SET role = 'viewer' WHERE id = %(key)s", "viewer"),
        ("UPDATE tenants_membership SET role = 'member' WHERE id = %(membership)s", "member"),
        ("DELETE FROM tenants_membership WHERE id = %(membership)s", "api_key_creator_gone"),
        ("UPDATE auth_user SET is_active = false WHERE id = %(user)s", "api_key_creator_gone"),
        ("UPDATE tenants_apikey SET expires_at = now() WHERE id = %(key)s", "api_key_expired"),
    ],
    ids=["revoked", "key-role", "creator-role", "creator-left", "creator-deactivated", "expired"],
)
def test_a_committed_change_applies_to_the_next_request(watch, vouched, change, expected):
    membership, key, secret = vouched
    _resolved_twice(secret)

    _committed_elsewhere(
        change, {"key": key.pk, "membership": membership.pk, "user": membership.user_id}
    )

    statements, outcome = _statements(secret)
    assert (outcome, statements > 0) == (expected, True), statements


def test_a_change_to_another_organization_keeps_what_is_kept(watch, vouched, world):
    _, _, secret = vouched
    _resolved_twice(secret)
    viewer = world.bravo.users["viewer"].pk
    change = "UPDATE tenants_membership SET role = %s WHERE organization_id = %s AND user_id = %s"
    _committed_elsewhere(change, ["member", world.bravo.org.pk, viewer])
    _committed_elsewhere(change, ["viewer", world.bravo.org.pk, viewer])
    assert access_watch._counts.orgs.get(world.bravo.org.pk, 0) >= 2
    assert _statements(secret) == (0, "admin")


def test_a_save_that_changes_nothing_of_access_notifies_nothing(watch, vouched):
    """A full save() writes every column: only a changed value of one that access is read from
    notifies (the triggers' WHEN), so profile edits and logins keep what is kept."""
    membership, key, secret = vouched
    _resolved_twice(secret)
    seen = access_watch._counts.changes
    user = get_user_model().objects.get(pk=membership.user_id)
    user.first_name = "Renamed"
    user.save()
    ApiKey.objects.get(pk=key.pk).save()
    Membership.objects.get(pk=membership.pk).save()
    Organization.objects.get(pk=membership.organization_id).save()
    _committed_elsewhere("SELECT pg_notify('cadence_access', 'schema:nobody')", [])
    assert access_watch._counts.changes == seen + 1  # only the marker sent after them
    assert _statements(secret) == (0, "admin")


def test_what_was_read_before_a_change_was_seen_is_not_kept(watch, vouched):
    _, key, secret = vouched
    before = _quiet_stamp()
    assert before is not None
    _committed_elsewhere("UPDATE tenants_apikey SET role = 'viewer' WHERE id = %s", [key.pk])
    # As if it had been read before the change committed: it must not be kept.
    access_watch.remember("key", secret, "stale", org_id=key.organization_id, before=before)
    assert access_watch.recall("key", secret) is None


def test_a_key_kept_is_not_given_back_past_its_expiry(watch, vouched):
    _, key, secret = vouched
    _seen(
        lambda: ApiKey.objects.filter(pk=key.pk).update(
            expires_at=timezone.now() + timedelta(seconds=1.5)
        )
    )
    _resolved_twice(secret)
    time.sleep(1.6)
    assert _statements(secret)[1] == "api_key_expired"


def test_nothing_is_kept_while_the_watch_is_not_listening(watch, vouched):
    membership, key, secret = vouched
    _resolved_twice(secret)
    with psycopg.connect(test_database_url(), autocommit=True) as admin:
        ended = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'cadence-access-watch' AND datname = current_database()"
        ).fetchall()
        assert ended == [(True,)]
        # Committed while nobody listens: no notification will ever say so.
        admin.execute(
            "UPDATE tenants_membership SET role = 'viewer' WHERE id = %s", [membership.pk]
        )
    deadline = time.monotonic() + 5
    while watch.ready.is_set() and access_watch.listening():
        assert time.monotonic() < deadline, "the watch did not notice its connection ended"
        time.sleep(0.01)

    assert _statements(secret)[1] == "viewer"
    assert watch.ready.wait(15), "the watch did not reconnect"
    first, role = _statements(secret)
    assert (first > 0, role) == (True, "viewer")
    assert _statements(secret) == (0, "viewer")


class _Models:
    """GET /v1/models on a live server whose output goes to `log`: a 5xx fails the test with
    the server's last output (its traceback), which the test's own captured output may not
    carry whole (a CI summary cuts it)."""

    def __init__(self, client: httpx.Client, log) -> None:
        self.client = client
        self.log = log

    def __call__(self) -> httpx.Response:
        response = self.client.get("/v1/models")
        if response.status_code >= 500:
            self.log.flush()
            self.log.seek(0)
            tail = self.log.read()[-6000:]
            pytest.fail(f"/v1/models answered {response.status_code}; the server said:\n{tail}")
        return response


def _refused_within(get: _Models, seconds: float) -> tuple[httpx.Response, int]:
    """The first response that is not a 200 (or the last within `seconds`), and how many
    requests were served before it."""
    deadline = time.monotonic() + seconds
    served = 0
    while True:
        response = get()
        if response.status_code != 200 or time.monotonic() > deadline:
            return response, served
        served += 1
        time.sleep(0.002)


def test_a_served_v1_caller_follows_a_change_on_its_next_request(vouched, world):
    """A real server (its lifespan runs the watch): a key revoked by another connection, and an
    organization suspended, are refused as soon as the notification is delivered (asserted
    within a second; typically the very next request), twenty times over."""
    _, key, secret = vouched
    log = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
    server = start_live_server(test_database_url(), output=log)
    try:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=10
        ) as client:
            get = _Models(client, log)
            served_after = []
            for _ in range(20):
                assert get().status_code == 200
                assert get().status_code == 200
                _commit("UPDATE tenants_apikey SET revoked_at = now() WHERE id = %s", [key.pk])
                refused, served = _refused_within(get, 1.0)
                served_after.append(served)
                assert (refused.status_code, refused.json()["error"]["code"]) == (
                    401,
                    "invalid_api_key",
                )
                _commit("UPDATE tenants_apikey SET revoked_at = NULL WHERE id = %s", [key.pk])
                deadline = time.monotonic() + 1
                while get().status_code != 200:
                    assert time.monotonic() < deadline, "the key stayed refused once restored"
            assert len(served_after) == 20, served_after  # each within the second
            Organization.objects.filter(pk=world.alpha.org.pk).update(status="suspended")
            try:
                suspended, _ = _refused_within(get, 1.0)
            finally:
                Organization.objects.filter(pk=world.alpha.org.pk).update(status="active")
            assert (suspended.status_code, suspended.json()["error"]["code"]) == (
                403,
                "org_suspended",
            )
    finally:
        server.stop()
        log.close()


def test_switched_off_nothing_listens_and_every_request_reads(settings, vouched):
    """CADENCE_ACCESS_WATCH=false (a pooler that cannot carry LISTEN): no watch, nothing kept."""
    settings.CADENCE_ACCESS_WATCH = False
    assert access_watch.start() is None
    assert not access_watch.listening()
    _, _, secret = vouched
    assert _statements(secret)[0] > 0
    assert _statements(secret)[0] > 0
