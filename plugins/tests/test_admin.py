from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django_tenants.utils import schema_context

from plugins.models import PluginVersion
from plugins.system.models import SystemPluginVersion
from plugins.tests import hostile
from plugins.tests.conftest import manifest, package, stored_files

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def alpha_rows():
    with schema_context("org_alpha"):
        return list(PluginVersion.objects.values_list("plugin_id", "version", "status"))


def test_operators_upload_system_plugins_in_the_admin(world, plugin_storage):
    world.staff.is_superuser = True
    world.staff.save()
    client = _client(world.staff)
    raw = package(manifest(id="io.cadence.ops", kind="system"))
    response = client.post(
        "/admin/system_plugins/systempluginversion/add/",
        {"package": SimpleUploadedFile("p.zip", raw)},
    )
    assert response.status_code == 302, response.content[:2000]
    assert list(SystemPluginVersion.objects.values_list("plugin_id", "status")) == [
        ("io.cadence.ops", "enabled")
    ]
    row = SystemPluginVersion.objects.get()
    client.post(
        "/admin/system_plugins/systempluginversion/",
        {"action": "deprecate", "_selected_action": [row.pk]},
    )
    row.refresh_from_db()
    assert row.status == "deprecated"


def test_the_admin_form_shows_every_refusal_and_stores_nothing(world, plugin_storage):
    client = _client(world.alpha.users["admin"])
    response = client.post(
        "/orgs/alpha/admin/plugins/pluginversion/add/",
        {"package": SimpleUploadedFile("p.zip", hostile.symlink())},
    )
    assert response.status_code == 200
    assert b"is a symbolic link" in response.content
    assert alpha_rows() == [] and stored_files(plugin_storage) == []


def test_tenant_admins_upload_and_change_status_members_only_read(world, plugin_storage):
    admin = _client(world.alpha.users["admin"])
    response = admin.post(
        "/orgs/alpha/admin/plugins/pluginversion/add/",
        {"package": SimpleUploadedFile("p.zip", package())},
    )
    assert response.status_code == 302
    assert alpha_rows() == [("com.acme.weather", "1.0.0", "enabled")]
    with schema_context("org_alpha"):
        pk = PluginVersion.objects.get().pk
    admin.post(
        "/orgs/alpha/admin/plugins/pluginversion/", {"action": "disable", "_selected_action": [pk]}
    )
    assert alpha_rows() == [("com.acme.weather", "1.0.0", "disabled")]

    member = _client(world.alpha.users["member"])
    assert member.get("/orgs/alpha/admin/plugins/pluginversion/").status_code == 200
    response = member.post(
        "/orgs/alpha/admin/plugins/pluginversion/add/",
        {"package": SimpleUploadedFile("p.zip", package(manifest(version="2.0.0")))},
    )
    assert response.status_code == 403
    member.post(
        "/orgs/alpha/admin/plugins/pluginversion/", {"action": "enable", "_selected_action": [pk]}
    )
    assert alpha_rows() == [("com.acme.weather", "1.0.0", "disabled")]
    # Another organization's admin does not see alpha's plugins.
    bravo = _client(world.bravo.users["owner"])
    assert b"com.acme.weather" not in bravo.get("/orgs/bravo/admin/plugins/pluginversion/").content
