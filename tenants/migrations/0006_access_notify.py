"""NOTIFY cadence_access when a row that authentication reads changes (tenants/access_watch.py).

The payload is the organization's id; `*` for a user (their memberships span organizations).
A key's `last_used_at` (written as keys are used) and a user's `last_login` are not access and
notify nothing. PostgreSQL delivers a notification only if its transaction commits, once per
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

DROP TRIGGER IF EXISTS cadence_access_apikey ON tenants_apikey;
CREATE TRIGGER cadence_access_apikey
    AFTER INSERT OR DELETE OR UPDATE OF
        organization_id, prefix, secret_hash, role, created_by_id, created_by_key_id, team_id,
        expires_at, revoked_at
    ON tenants_apikey FOR EACH ROW EXECUTE FUNCTION cadence_access_org_changed('organization_id');

DROP TRIGGER IF EXISTS cadence_access_membership ON tenants_membership;
CREATE TRIGGER cadence_access_membership
    AFTER INSERT OR UPDATE OR DELETE ON tenants_membership
    FOR EACH ROW EXECUTE FUNCTION cadence_access_org_changed('organization_id');

DROP TRIGGER IF EXISTS cadence_access_organization ON tenants_organization;
CREATE TRIGGER cadence_access_organization
    AFTER UPDATE OR DELETE ON tenants_organization
    FOR EACH ROW EXECUTE FUNCTION cadence_access_org_changed('id');

DROP TRIGGER IF EXISTS cadence_access_user ON {users};
CREATE TRIGGER cadence_access_user
    AFTER DELETE OR UPDATE OF is_active, is_staff ON {users}
    FOR EACH ROW EXECUTE FUNCTION cadence_access_everyone_changed();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS cadence_access_apikey ON tenants_apikey;
DROP TRIGGER IF EXISTS cadence_access_membership ON tenants_membership;
DROP TRIGGER IF EXISTS cadence_access_organization ON tenants_organization;
DROP TRIGGER IF EXISTS cadence_access_user ON {users};
DROP FUNCTION IF EXISTS cadence_access_org_changed();
DROP FUNCTION IF EXISTS cadence_access_everyone_changed();
"""


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
