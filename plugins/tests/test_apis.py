from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django_tenants.utils import schema_context

from plugins.models import PluginStatus, PluginVersion
from plugins.services import plugin_upload
from plugins.system.models import SystemPluginVersion
from plugins.tests import hostile
from plugins.tests.conftest import manifest, package, simple, stored_files

pytestmark = pytest.mark.django_db

BASE = "/api/v1/orgs/alpha/plugins/"


def upload(client, raw: bytes, base: str = BASE):
    return client.post(base, {"package": SimpleUploadedFile("p.zip", raw)}, format="multipart")


def alpha_rows() -> list[tuple[str, str]]:
    with schema_context("org_alpha"):
        return list(
            PluginVersion.objects.order_by("plugin_id", "version").values_list(
                "plugin_id", "version"
            )
        )


@pytest.fixture
def admin(world, as_key):
    return as_key(world.alpha.keys["admin"])


def test_upload_stores_the_package_and_lists_it(admin, plugin_storage):
    response = upload(admin, package())

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["id"] == "com.acme.weather" and body["source"] == "tenant"
    assert body["versions"][0]["status"] == "enabled"
    assert stored_files(plugin_storage) == ["orgs/org_alpha/com.acme.weather/1.0.0.zip"]
    listed = admin.get(BASE).json()["results"]
    assert [(p["id"], p["source"], [v["version"] for v in p["versions"]]) for p in listed] == [
        ("com.acme.weather", "tenant", ["1.0.0"])
    ]


def test_same_version_is_a_noop_when_identical_and_409_otherwise(admin, plugin_storage):
    assert upload(admin, package()).status_code == 201
    assert upload(admin, package()).status_code == 200
    changed = upload(admin, package(manifest(description="Different.")))
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "version_exists"
    assert alpha_rows() == [("com.acme.weather", "1.0.0")]
    assert stored_files(plugin_storage) == ["orgs/org_alpha/com.acme.weather/1.0.0.zip"]


@pytest.mark.parametrize("name", sorted(hostile.CORPUS))
def test_hostile_uploads_are_refused_and_nothing_is_stored(admin, plugin_storage, name):
    build, code = hostile.CORPUS[name]
    response = upload(admin, build())

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == code
    assert alpha_rows() == [] and stored_files(plugin_storage) == []


def test_a_bad_manifest_lists_every_issue_with_its_path(admin, plugin_storage):
    response = upload(admin, package(manifest(version="one", id="bad", extra=True)))

    assert response.status_code == 400
    issues = response.json()["error"]["details"]["issues"]
    assert [i["path"] for i in issues] == ["", "/id", "/version"]
    assert alpha_rows() == []


def test_missing_package_field_and_oversized_body(admin, settings):
    assert upload(admin, b"").status_code == 400
    response = admin.post(BASE, {"other": "x"}, format="multipart")
    assert response.status_code == 400 and response.json()["error"]["code"] == "package_required"
    settings.CADENCE_PLUGIN_MAX_UPLOAD_BYTES = 1000
    response = upload(admin, b"x" * 5000)
    assert response.status_code == 413


@pytest.mark.parametrize("who", ["member", "viewer"])
def test_lower_roles_cannot_upload_but_can_read(world, as_key, plugin_storage, who):
    client = as_key(world.alpha.keys[who])
    response = upload(client, package())
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "role_required"
    assert alpha_rows() == [] and stored_files(plugin_storage) == []
    assert client.get(BASE).status_code == 200


def test_outsiders_get_404_and_nothing_changes(world, as_key, as_user, plugin_storage):
    for client in (as_key(world.bravo.keys["owner"]),):
        assert upload(client, package()).status_code == 404
        assert client.get(BASE).status_code == 404
    outsider = as_user(world.outsider)
    assert upload(outsider, package()).status_code == 404
    assert alpha_rows() == [] and stored_files(plugin_storage) == []


def test_another_organization_never_sees_a_tenant_plugin(world, as_key, admin):
    assert upload(admin, package()).status_code == 201
    bravo = as_key(world.bravo.keys["owner"])
    assert bravo.get("/api/v1/orgs/bravo/plugins/").json()["results"] == []
    assert bravo.get("/api/v1/orgs/bravo/plugins/com.acme.weather/").status_code == 404
    action = "/api/v1/orgs/bravo/plugins/com.acme.weather/versions/1.0.0/disable/"
    assert bravo.post(action).status_code == 404
    admin = as_key(world.alpha.keys["admin"])
    assert (
        admin.get(f"{BASE}com.acme.weather/").json()["results"][0]["versions"][0]["status"]
        == "enabled"
    )


def test_system_plugins_are_visible_to_every_organization_marked_system(world, as_key):
    with schema_context("public"):
        plugin_upload(
            raw=package(manifest(id="io.cadence.clock", kind="system")), uploaded_by="ops"
        )
    for slug in ("alpha", "bravo"):
        client = as_key(getattr(world, slug).keys["viewer"])
        listed = client.get(f"/api/v1/orgs/{slug}/plugins/").json()["results"]
        assert [(p["id"], p["source"], p["kind"]) for p in listed] == [
            ("io.cadence.clock", "system", "system")
        ]
    admin = as_key(world.alpha.keys["admin"])
    response = admin.post(f"{BASE}io.cadence.clock/versions/1.0.0/disable/")
    assert response.status_code == 403 and response.json()["error"]["code"] == "system_plugin"
    assert SystemPluginVersion.objects.get().status == PluginStatus.ENABLED
    # A tenant cannot squat a system plugin's id.
    response = upload(admin, package(manifest(id="io.cadence.clock", version="9.0.0")))
    assert response.status_code == 409 and response.json()["error"]["code"] == "plugin_id_reserved"


def test_versions_side_by_side_and_status_changes(admin):
    assert upload(admin, package()).status_code == 201
    assert upload(admin, package(manifest(version="1.1.0"))).status_code == 201
    versions = admin.get(f"{BASE}com.acme.weather/").json()["results"][0]["versions"]
    assert [v["version"] for v in versions] == ["1.1.0", "1.0.0"]
    for action, status in (
        ("deprecate", "deprecated"),
        ("disable", "disabled"),
        ("enable", "enabled"),
    ):
        response = admin.post(f"{BASE}com.acme.weather/versions/1.0.0/{action}/")
        assert response.status_code == 200 and response.json()["status"] == status
    assert admin.post(f"{BASE}com.acme.weather/versions/1.0.0/disable/").status_code == 200
    response = admin.post(f"{BASE}com.acme.weather/versions/1.0.0/approve/")
    assert response.status_code == 409 and response.json()["error"]["code"] == "invalid_transition"


def test_uploads_and_status_changes_are_audited(world, admin):
    from tenants.audit.models import AuditEvent

    assert upload(admin, package()).status_code == 201
    assert admin.post(f"{BASE}com.acme.weather/versions/1.0.0/disable/").status_code == 200
    # A refused transition changes nothing and records nothing.
    assert admin.post(f"{BASE}com.acme.weather/versions/1.0.0/approve/").status_code == 409

    with schema_context("org_alpha"):
        events = list(
            AuditEvent.objects.filter(action__startswith="plugin.")
            .order_by("created_at")
            .values("action", "actor", "target", "details")
        )
    from tenants.models import ApiKey

    prefix = ApiKey.objects.get(pk=world.alpha.key_ids["admin"]).prefix
    assert [(e["action"], e["actor"], e["target"]) for e in events] == [
        ("plugin.uploaded", f"key:{prefix}", "com.acme.weather@1.0.0"),
        ("plugin.disable", f"key:{prefix}", "com.acme.weather@1.0.0"),
    ]
    assert events[0]["details"]["after"]["status"] == "enabled"
    assert len(events[0]["details"]["after"]["sha256"]) == 64
    assert events[1]["details"]["before"] == {"status": "enabled"}
    assert events[1]["details"]["after"] == {"status": "disabled"}


def test_an_upgrade_that_widens_capabilities_waits_for_approval(world, as_key, admin):
    assert upload(admin, package()).status_code == 201
    wider = manifest(
        version="2.0.0",
        capabilities={"egress": ["api.weather.test", "exfil.test"], "secrets": ["api_key"]},
    )
    response = upload(admin, package(wider))
    assert response.status_code == 201
    version = response.json()["versions"][0]
    assert version["status"] == "pending_approval"
    assert version["capability_diff"] == {
        "added": {"egress": ["exfil.test"]},
        "removed": {},
        "widened": True,
    }
    member = as_key(world.alpha.keys["member"])
    assert member.post(f"{BASE}com.acme.weather/versions/2.0.0/approve/").status_code == 403
    admin = as_key(world.alpha.keys["admin"])
    response = admin.post(f"{BASE}com.acme.weather/versions/2.0.0/approve/")
    assert response.status_code == 200 and response.json()["status"] == "enabled"
    assert response.json()["approved_by"] != ""


def test_the_manifest_schema_is_published():
    from rest_framework.test import APIClient

    response = APIClient().get("/api/v1/plugins/schema/1.json")
    assert response.status_code == 200
    assert response.json()["$id"] == "https://cadence.local/schemas/cadence-plugin-1.json"


def test_an_upload_opens_no_connection_and_starts_no_process(world, monkeypatch):
    """Installing is reading bytes: no pip, no index, no network, whatever the package declares
    (dependencies on other plugins are resolved from the catalogs, never fetched)."""
    import socket
    import subprocess

    attempts: list[str] = []

    def no_connect(self, address):
        attempts.append(f"connect {address}")
        raise OSError("network is off in this test")

    def no_process(*args, **kwargs):
        attempts.append(f"process {args[:1]}")
        raise OSError("processes are off in this test")

    with schema_context("org_alpha"):
        plugin_upload(raw=simple("com.acme.base", "1.0.0"))
        monkeypatch.setattr(socket.socket, "connect", no_connect)
        monkeypatch.setattr(socket.socket, "connect_ex", no_connect)
        monkeypatch.setattr(subprocess.Popen, "__init__", no_process)
        row, created = plugin_upload(
            raw=package(
                manifest(dependencies={"com.acme.base": ">=1.0,<2"}),
                files={"requirements.txt": b"requests==2.0\n"},
            )
        )

    assert created and row.status == PluginStatus.ENABLED
    assert attempts == []


def test_plugin_and_storage_quotas_refuse_an_upload_and_store_nothing(world, admin, plugin_storage):
    from tenants.limits.tests.conftest import overridden

    assert upload(admin, simple("com.acme.first")).status_code == 201
    first_size = len(simple("com.acme.first"))
    with overridden(world.alpha.org, max_plugins=1):
        refused = upload(admin, simple("com.acme.second"))
        # A new version of a plugin already counted is not one more plugin.
        again = upload(admin, simple("com.acme.first", "1.1.0"))
    assert refused.status_code == 409
    assert refused.json()["error"]["details"] == {
        "quota": "max_plugins",
        "limit": 1,
        "used": 1,
        "requested": 1,
    }
    assert again.status_code == 201

    used = first_size + len(simple("com.acme.first", "1.1.0"))
    with overridden(world.alpha.org, max_storage_bytes=used + 10):
        too_big = upload(admin, simple("com.acme.third"))
    assert too_big.status_code == 409
    assert too_big.json()["error"]["details"]["quota"] == "max_storage_bytes"
    assert too_big.json()["error"]["details"]["used"] == used
    assert alpha_rows() == [("com.acme.first", "1.0.0"), ("com.acme.first", "1.1.0")]
    assert stored_files(plugin_storage) == [
        "orgs/org_alpha/com.acme.first/1.0.0.zip",
        "orgs/org_alpha/com.acme.first/1.1.0.zip",
    ]


def test_uploads_have_their_own_rate_limit_per_caller(world, admin, settings):
    from tenants.limits.tests.conftest import overridden

    settings.CADENCE_SCOPE_LIMITS = {"uploads": 2}
    with overridden(world.alpha.org, requests_per_minute=100):
        statuses = [upload(admin, simple(f"com.acme.rate{i}")).status_code for i in range(3)]
    assert statuses == [201, 201, 429]
    assert alpha_rows() == [("com.acme.rate0", "1.0.0"), ("com.acme.rate1", "1.0.0")]
