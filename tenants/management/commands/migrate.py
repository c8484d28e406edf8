"""`migrate`: django-tenants' migrate_schemas, then the provisioning template is migrated and re-dumped.

Every new organization is a copy of the template (tenants/provisioning.py), so the template must
be current after every migrate, and its stored DDL refreshed with it.
"""

from __future__ import annotations

from django.db import connection
from django_tenants.management.commands.migrate_schemas import MigrateSchemasCommand

from tenants import provisioning


class Command(MigrateSchemasCommand):
    def handle(self, *args, **options):
        super().handle(*args, **options)
        template = provisioning.template_schema_name()
        if not self.sync_tenant or (
            self.schema_name and self.schema_name not in (template, self.PUBLIC_SCHEMA_NAME)
        ):
            return
        if options.get("plan") or options.get("check_unapplied") or options.get("fake"):
            return
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{template}"')
        executor = self._template_executor()
        executor.run_migrations(tenants=[template])
        connection.set_schema_to_public()
        snapshot = provisioning.template_refresh()
        if int(options.get("verbosity", 1)) >= 1:
            how = "cloned from its DDL snapshot" if snapshot else "migrated (no pg_dump found)"
            self.stdout.write(
                f"Provisioning template {template!r} is current; new organizations will be {how}."
            )

    def _template_executor(self):
        from django_tenants.management.commands.migrate_schemas import GET_EXECUTOR_FUNCTION

        return GET_EXECUTOR_FUNCTION(codename=self.executor)(self.args, self.options)
