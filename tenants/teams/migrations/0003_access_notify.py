"""NOTIFY cadence_access when what decides who sees an orchestrator changes in this schema.

The payload is `schema:<schema name>` (tenants/access_watch.py counts it per schema): teams,
their members, orchestrators shared with teams, and an orchestrator's status or team. Open chat
sockets keep their conversation and their caller's teams while no such change is notified
(chat/consumers.py). Statement-level: one notification per statement, and PostgreSQL delivers
one per distinct payload per committed transaction. Created in each tenant schema (the migration
runs with that schema first on the search_path), so the template schema's dump carries it to
every new organization.
"""

from django.db import migrations

FUNCTION = """
CREATE FUNCTION teams_access_changed() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  PERFORM pg_notify('cadence_access', 'schema:' || TG_TABLE_SCHEMA);
  RETURN NULL;
END
$body$;
"""

TRIGGERS = {
    "teams_team": "INSERT OR UPDATE OR DELETE",
    "teams_teammembership": "INSERT OR UPDATE OR DELETE",
    "teams_orchestratorshare": "INSERT OR UPDATE OR DELETE",
    "orchestrators_orchestratorinstance": "UPDATE OF status, team_id OR DELETE",
}


def _triggers(create: bool) -> str:
    statements = []
    for table, events in TRIGGERS.items():
        name = f"{table}_access_notify"
        if create:
            statements.append(
                f"CREATE TRIGGER {name} AFTER {events} ON {table} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION teams_access_changed();"
            )
        else:
            statements.append(f"DROP TRIGGER IF EXISTS {name} ON {table};")
    return "\n".join(statements)


class Migration(migrations.Migration):
    dependencies = [
        ("orchestrators", "0004_resource_team"),
        ("teams", "0002_resource_shares"),
    ]

    operations = [
        migrations.RunSQL(
            FUNCTION + _triggers(True),
            _triggers(False) + "\nDROP FUNCTION IF EXISTS teams_access_changed();",
        )
    ]
