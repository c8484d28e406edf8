"""NOTIFY cadence_access when what decides who sees an orchestrator changes in this schema.

The payload is `schema:<schema name>` (tenants/access_watch.py counts it per schema): teams,
their members, orchestrators shared with teams, an orchestrator's status or team, and a
conversation's team or orchestrator. Open chat sockets keep their conversation and their
caller's teams while no such change is notified (chat/consumers.py). PostgreSQL delivers one
notification per distinct payload per committed transaction. Created in each tenant schema (the
migration runs with that schema first on the search_path), so the template schema's dump
carries it to every new organization.
"""

from django.db import migrations

_STATEMENT = "FOR EACH STATEMENT"

FUNCTION = """
CREATE FUNCTION teams_access_changed() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  PERFORM pg_notify('cadence_access', 'schema:' || TG_TABLE_SCHEMA);
  RETURN NULL;
END
$body$;
"""

# (trigger name, table, events, level): statement-level where the rows' values do not matter,
# row-level with WHEN where only some columns decide access (a full save() of an orchestrator or
# a conversation's title notifies nothing).
TRIGGERS = [
    ("teams_team_access_notify", "teams_team", "INSERT OR UPDATE OR DELETE OR TRUNCATE", _STATEMENT),
    ("teams_teammembership_access_notify", "teams_teammembership",
     "INSERT OR UPDATE OR DELETE OR TRUNCATE", _STATEMENT),
    ("teams_orchestratorshare_access_notify", "teams_orchestratorshare",
     "INSERT OR UPDATE OR DELETE OR TRUNCATE", _STATEMENT),
    ("orchestrators_orchestratorinstance_access_notify", "orchestrators_orchestratorinstance",
     "DELETE OR TRUNCATE", _STATEMENT),
    ("orchestrators_orchestratorinstance_access_update", "orchestrators_orchestratorinstance",
     "UPDATE", "FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status"
     " OR OLD.team_id IS DISTINCT FROM NEW.team_id)"),
    ("chat_conversation_access_update", "chat_conversation", "UPDATE",
     "FOR EACH ROW WHEN (OLD.team_id IS DISTINCT FROM NEW.team_id"
     " OR OLD.orchestrator_id IS DISTINCT FROM NEW.orchestrator_id)"),
]  # fmt: skip


def _triggers(create: bool) -> str:
    statements = []
    for name, table, events, level in TRIGGERS:
        if create:
            statements.append(
                f"CREATE TRIGGER {name} AFTER {events} ON {table} {level} "
                f"EXECUTE FUNCTION teams_access_changed();"
            )
        else:
            statements.append(f"DROP TRIGGER IF EXISTS {name} ON {table};")
    return "\n".join(statements)


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0004_merge_0002_conversation_team_0003_merge_20261206_0433"),
        ("orchestrators", "0004_resource_team"),
        ("teams", "0002_resource_shares"),
    ]

    operations = [
        migrations.RunSQL(
            FUNCTION + _triggers(True),
            _triggers(False) + "\nDROP FUNCTION IF EXISTS teams_access_changed();",
        )
    ]
