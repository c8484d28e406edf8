"""Evidence rows are append-only: UPDATE and DELETE are refused by the database itself.

The function is created in each tenant schema (the migration runs with that schema first on the
search_path), so the template schema's dump carries it to every new organization.
"""

from django.db import migrations

TABLES = ["trust_definitionsnapshot", "trust_executionproof", "trust_logleaf", "trust_lognode"]

FUNCTION = """
CREATE FUNCTION trust_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  RAISE EXCEPTION 'rows of % are append-only (% refused)', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'integrity_constraint_violation';
END
$body$;
"""


def _triggers(create: bool) -> str:
    statements = []
    for table in TABLES:
        name = f"{table}_append_only"
        if create:
            statements.append(
                f"CREATE TRIGGER {name} BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION trust_refuse_change();"
            )
        else:
            statements.append(f"DROP TRIGGER IF EXISTS {name} ON {table};")
    return "\n".join(statements)


class Migration(migrations.Migration):
    dependencies = [("trust", "0001_initial")]

    operations = [
        migrations.RunSQL(
            FUNCTION + _triggers(True),
            _triggers(False) + "\nDROP FUNCTION IF EXISTS trust_refuse_change();",
        )
    ]
