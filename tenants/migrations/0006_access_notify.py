"""NOTIFY cadence_access when a row that authentication reads changes (tenants/access_watch.py).

The payload is the organization's id; `*` for a user (their memberships span organizations) and
for a TRUNCATE. Only a change to a column that access is read from notifies (WHEN clauses): a
key's `last_used_at` (written as keys are used), a user's `last_login` or a full `save()` that
changes nothing of it notify nothing. PostgreSQL delivers a notification only if its transaction commits, once per
distinct payload per transaction.
"""

from django.conf import settings
from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION cadence_access_org_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    column_name text := TG_ARGV[0];
    old_org text := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) ->> column_name END;
    new_org text := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) ->> column_name END;
BEGIN
    IF old_org IS NOT NULL THEN
        PERFORM pg_notify('cadence_access', old_org);
    END IF;
    IF new_org IS NOT NULL AND new_org IS DISTINCT FROM old_org THEN
        PERFORM pg_notify('cadence_access', new_org);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION cadence_access_everyone_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cadence_access', '*');
    RETURN NULL;
END $$;
""" + "".join(
    f"""
DROP TRIGGER IF EXISTS {name} ON {table};
CREATE TRIGGER {name} AFTER {events} ON {table} {level}
    EXECUTE FUNCTION {function};
"""
    for name, table, events, level, function in [
        (
            "cadence_access_apikey",
            "tenants_apikey",
            "INSERT OR DELETE",
            "FOR EACH ROW",
            "cadence_access_org_changed('organization_id')",
        ),
        (
            "cadence_access_apikey_update",
            "tenants_apikey",
            "UPDATE",
            "FOR EACH ROW WHEN ("
            + " OR ".join(
                f"OLD.{c} IS DISTINCT FROM NEW.{c}"
                for c in (
                    "organization_id",
                    "prefix",
                    "secret_hash",
                    "role",
                    "created_by_id",
                    "created_by_key_id",
                    "team_id",
                    "expires_at",
                    "revoked_at",
                )
            )
            + ")",
            "cadence_access_org_changed('organization_id')",
        ),
        (
            "cadence_access_membership",
            "tenants_membership",
            "INSERT OR DELETE",
            "FOR EACH ROW",
            "cadence_access_org_changed('organization_id')",
        ),
        (
            "cadence_access_membership_update",
            "tenants_membership",
            "UPDATE",
            "FOR EACH ROW WHEN (OLD.role IS DISTINCT FROM NEW.role"
            " OR OLD.user_id IS DISTINCT FROM NEW.user_id"
            " OR OLD.organization_id IS DISTINCT FROM NEW.organization_id)",
            "cadence_access_org_changed('organization_id')",
        ),
        (
            "cadence_access_organization",
            "tenants_organization",
            "DELETE",
            "FOR EACH ROW",
            "cadence_access_org_changed('id')",
        ),
        (
            "cadence_access_organization_update",
            "tenants_organization",
            "UPDATE",
            "FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status"
            " OR OLD.slug IS DISTINCT FROM NEW.slug"
            " OR OLD.schema_name IS DISTINCT FROM NEW.schema_name)",
            "cadence_access_org_changed('id')",
        ),
        (
            "cadence_access_user",
            "{users}",
            "DELETE",
            "FOR EACH ROW",
            "cadence_access_everyone_changed()",
        ),
        (
            "cadence_access_user_update",
            "{users}",
            "UPDATE",
            "FOR EACH ROW WHEN (OLD.is_active IS DISTINCT FROM NEW.is_active"
            " OR OLD.is_staff IS DISTINCT FROM NEW.is_staff)",
            "cadence_access_everyone_changed()",
        ),
        *(
            (
                f"cadence_access_{short}_truncate",
                table,
                "TRUNCATE",
                "FOR EACH STATEMENT",
                "cadence_access_everyone_changed()",
            )
            for short, table in (
                ("apikey", "tenants_apikey"),
                ("membership", "tenants_membership"),
                ("organization", "tenants_organization"),
                ("user", "{users}"),
            )
        ),
    ]
)

BACKWARD = (
    "".join(
        f"DROP TRIGGER IF EXISTS cadence_access_{name} ON {table};\n"
        for name, table in (
            ("apikey", "tenants_apikey"),
            ("apikey_update", "tenants_apikey"),
            ("apikey_truncate", "tenants_apikey"),
            ("membership", "tenants_membership"),
            ("membership_update", "tenants_membership"),
            ("membership_truncate", "tenants_membership"),
            ("organization", "tenants_organization"),
            ("organization_update", "tenants_organization"),
            ("organization_truncate", "tenants_organization"),
            ("user", "{users}"),
            ("user_update", "{users}"),
            ("user_truncate", "{users}"),
        )
    )
    + "DROP FUNCTION IF EXISTS cadence_access_org_changed();\n"
    + "DROP FUNCTION IF EXISTS cadence_access_everyone_changed();\n"
)


def _users_table() -> str:
    from django.apps import apps as global_apps

    return global_apps.get_model(settings.AUTH_USER_MODEL)._meta.db_table


def forward(apps, schema_editor):
    if schema_editor.connection.schema_name != "public":
        return
    schema_editor.execute(FORWARD.replace("{users}", _users_table()))


def backward(apps, schema_editor):
    if schema_editor.connection.schema_name != "public":
        return
    schema_editor.execute(BACKWARD.replace("{users}", _users_table()))


class Migration(migrations.Migration):
    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("tenants", "0005_apikey_team"),
    ]

    operations = [migrations.RunPython(forward, backward)]
