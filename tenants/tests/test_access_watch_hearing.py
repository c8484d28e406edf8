"""The watch keeps nothing unless it hears the database: its own notification, sent the way
changes are written, must come back before it listens and every PROBE_EVERY seconds after.

A watch listening on another database of the same server is what a pooler in transaction mode or
a silently dropped connection look like: LISTEN accepted, the test database's NOTIFYs never
delivered (found by the reviewer of the access watch).
"""

from __future__ import annotations

import time

import pytest

from tenants import access_watch
from tenants.models import ApiKey
from tenants.services import api_key_revoke
from tenants.tests.test_access_watch import _statements, vouched  # noqa: F401


@pytest.fixture
def deaf_watch(committed_db, monkeypatch):
    conninfo = access_watch._conninfo
    monkeypatch.setattr(access_watch, "_conninfo", lambda: {**conninfo(), "dbname": "postgres"})
    started = access_watch.start()
    assert not started.ready.wait(3)  # its own notification never comes back
    yield started
    access_watch.stop()


def test_a_watch_that_hears_no_notification_keeps_nothing(deaf_watch, vouched):  # noqa: F811
    _, key, secret = vouched
    first, role = _statements(secret)
    assert (first > 0, role) == (True, "admin")

    # Through the service (it also drops the Redis prefix cache the unwatched path reads).
    api_key_revoke(key=ApiKey.objects.get(pk=key.pk), actor_role="owner")
    time.sleep(0.5)  # far beyond any notification's delivery

    statements, outcome = _statements(secret)
    assert (outcome, statements > 0) == ("api_key_revoked", True), statements


def test_sound_a_minted_key_kept_is_not_given_back_past_its_minting_keys_expiry(
    access_watch_running,
    vouched,  # noqa: F811
):
    """Checked sound: what is kept for a minted key carries the chain's earliest expiry
    (api_key_effective_rights' `until`), so time, which notifies nothing, still ends it."""
    from datetime import timedelta

    from django.utils import timezone

    from tenants.services import api_key_create
    from tenants.tests.test_access_watch import _seen

    membership, _, _ = vouched
    parent, _ = api_key_create(
        org=membership.organization,
        name="review parent",
        role="admin",
        creator_role="admin",
        created_by=membership.user,
        expires_at=timezone.now() + timedelta(seconds=1.5),
    )
    holder = {}
    _seen(
        lambda: holder.update(
            minted=api_key_create(
                org=membership.organization,
                name="review minted",
                role="admin",
                creator_role="admin",
                created_by=parent,
            )
        )
    )
    minted, secret = holder["minted"]
    try:
        _statements(secret)
        for _ in range(100):
            count, role = _statements(secret)
            if count == 0:
                break
            time.sleep(0.01)
        assert (count, role) == (0, "admin")
        time.sleep(1.6)
        assert _statements(secret)[1] == "api_key_creator_gone"
    finally:
        ApiKey.objects.filter(pk__in=[minted.pk, parent.pk]).delete()


@pytest.fixture
def fast_probe(monkeypatch):
    """Probes every 0.2 s, given 1 s to come back (set before the watch starts)."""
    monkeypatch.setattr(access_watch, "PROBE_EVERY", 0.2)
    monkeypatch.setattr(access_watch, "PROBE_WAIT", 1.0)


def test_a_watch_that_stops_hearing_itself_stops_keeping(
    fast_probe,
    access_watch_running,
    vouched,  # noqa: F811
    monkeypatch,
):
    from tenants.tests.test_access_watch import _resolved_twice

    _, _, secret = vouched
    _resolved_twice(secret)

    def lost(probe):  # from now on its probes go nowhere it listens
        probe.outstanding, probe.sent_at = "probe:lost", time.monotonic()

    monkeypatch.setattr(access_watch._Probe, "send", lost)
    deadline = time.monotonic() + 5
    while access_watch.listening():
        assert time.monotonic() < deadline, "the watch kept listening without hearing itself"
        time.sleep(0.02)
    assert _statements(secret)[0] > 0
