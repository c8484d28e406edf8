from __future__ import annotations

import json
import stat
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tenants.models import ApiKey, Membership, Organization

pytestmark = pytest.mark.django_db


def test_create_org_json(world):
    out = StringIO()

    call_command(
        "create_org", slug="delta", name="Delta", owner_email="o@delta.test", json=True, stdout=out
    )

    data = json.loads(out.getvalue())
    assert data["org"] == "delta"
    assert data["owner"]["username"] == "o@delta.test" and len(data["owner"]["password"]) >= 20
    assert data["api_key"].startswith("ck_")
    assert Membership.objects.get(organization__slug="delta").role == "owner"


def test_create_org_rejects_a_duplicate(world):
    with pytest.raises(CommandError, match="already exists"):
        call_command(
            "create_org", slug="alpha", name="Again", owner_email="o@a.test", stdout=StringIO()
        )


def test_bootstrap_demo_is_idempotent_and_writes_private_credentials(world, tmp_path):
    path = tmp_path / "demo-credentials.json"

    call_command("bootstrap_demo", credentials=str(path), stdout=StringIO())
    first = json.loads(path.read_text())
    call_command("bootstrap_demo", credentials=str(path), stdout=StringIO())
    second = json.loads(path.read_text())

    assert first == second
    assert set(first) == {"operator", "org", "owner", "api_key"}
    assert first["org"] == "acme"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Organization.objects.filter(slug="acme").count() == 1
    key = ApiKey.objects.get(prefix=first["api_key"][:12])
    assert key.organization.slug == "acme"


def test_bootstrap_demo_replaces_a_revoked_key(world, tmp_path):
    from django.utils import timezone

    path = tmp_path / "demo-credentials.json"
    call_command("bootstrap_demo", credentials=str(path), stdout=StringIO())
    first = json.loads(path.read_text())
    ApiKey.objects.filter(prefix=first["api_key"][:12]).update(revoked_at=timezone.now())

    call_command("bootstrap_demo", credentials=str(path), stdout=StringIO())

    assert json.loads(path.read_text())["api_key"] != first["api_key"]
