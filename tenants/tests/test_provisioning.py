from __future__ import annotations

import pytest
from django.db import connection
from django_tenants.utils import schema_context, schema_exists

from tenants import provisioning
from tenants.models import Organization, TemplateSnapshot

pytestmark = pytest.mark.django_db

_CATALOG = {
    "columns": "SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, '') FROM information_schema.columns WHERE table_schema = %s",
    "indexes": "SELECT indexname, regexp_replace(indexdef, ' ON \\S+\\.', ' ON ') FROM pg_indexes WHERE schemaname = %s",
    "constraints": "SELECT c.conname, c.contype, pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = %s",
    "sequences": "SELECT sequence_name FROM information_schema.sequences WHERE sequence_schema = %s",
    "migrations": "SELECT app, name FROM {schema}.django_migrations",
}


def _normalise(definition: str) -> str:
    """CHECK expressions read back from pg_dump's DDL gain or lose equivalent casts and brackets
    (`ARRAY['a'::varchar]::text[]` against `ARRAY[('a'::varchar)::text]`): compare without them."""
    import re

    text = re.sub(r"::(?:character varying|text)(?:\[\])?", "", definition)
    return re.sub(r"[()\s]", "", text)


def _catalog(schema: str) -> dict[str, set]:
    result = {}
    with connection.cursor() as cursor:
        for name, sql in _CATALOG.items():
            if "{schema}" in sql:
                cursor.execute(sql.format(schema=f'"{schema}"'))
            else:
                cursor.execute(sql, [schema])
            rows = {
                tuple(_normalise(str(v).replace(schema, "<schema>")) for v in row)
                for row in cursor.fetchall()
            }
            result[name] = rows
    return result


def test_cloned_schema_is_identical_to_a_migrated_one(world):
    provisioning.schema_provision("org_clone_probe")
    provisioning._provision_by_migrating("org_migrate_probe")

    cloned, migrated = _catalog("org_clone_probe"), _catalog("org_migrate_probe")

    for part in _CATALOG:
        assert cloned[part] == migrated[part], part
    assert len(cloned["columns"]) > 5 and ("audit", "0001_initial") in cloned["migrations"]


def test_snapshot_matches_the_template_migrations(world):
    snapshot = TemplateSnapshot.objects.get(schema_name=provisioning.template_schema_name())

    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT app, name FROM "{snapshot.schema_name}".django_migrations ORDER BY id'
        )
        assert [list(r) for r in cursor.fetchall()] == [row[:2] for row in snapshot.migration_rows]
    assert "CREATE TABLE" in snapshot.ddl and "SET " not in snapshot.ddl.splitlines()[0]


def test_tenant_rows_stay_in_their_schema(world):
    from tenants.audit.models import AuditEvent

    with schema_context("org_alpha"):
        AuditEvent.objects.create(action="probe", target="alpha-only")
    with schema_context("org_bravo"):
        assert not AuditEvent.objects.filter(target="alpha-only").exists()
    with schema_context(provisioning.template_schema_name()):
        assert AuditEvent.objects.count() == 0


def test_deleting_an_organization_drops_its_schema(world):
    from tenants.services import organization_create, organization_delete

    created = organization_create(name="Doomed", slug="doomed", owner_email="o@doomed.test")
    assert schema_exists("org_doomed")

    organization_delete(org=created.organization)

    assert not schema_exists("org_doomed")
    assert not Organization.objects.filter(slug="doomed").exists()


def test_protected_schemas_cannot_be_dropped():
    with pytest.raises(ValueError):
        provisioning.schema_drop("public")
    with pytest.raises(ValueError):
        provisioning.schema_drop(provisioning.template_schema_name())


def test_provisioning_falls_back_to_migrating_without_a_snapshot(world):
    TemplateSnapshot.objects.all().delete()

    method = provisioning.schema_provision("org_fallback_probe")

    assert method == "migrate"
    assert schema_exists("org_fallback_probe")
