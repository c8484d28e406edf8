"""`manage.py create_org --slug S --name N --owner-email E [--plan P] [--json]`."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from cadence_site.errors import ApplicationError
from tenants.models import Plan
from tenants.services import organization_create


class Command(BaseCommand):
    help = (
        "Create an organization (schema copied from the template), its owner and an owner API key."
    )

    def add_arguments(self, parser):
        parser.add_argument("--slug", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--owner-email", required=True)
        parser.add_argument("--plan", default=None, help="Plan slug (default: the 'default' plan).")
        parser.add_argument(
            "--json", action="store_true", help="Print the credentials as JSON only."
        )

    def handle(self, *args, **options):
        plan = None
        if options["plan"]:
            plan = Plan.objects.filter(slug=options["plan"]).first()
            if plan is None:
                raise CommandError(f"Unknown plan {options['plan']!r}.")
        try:
            created = organization_create(
                name=options["name"],
                slug=options["slug"],
                owner_email=options["owner_email"],
                plan=plan,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        owner = {"username": created.owner.get_username(), "password": created.owner_password}
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "org": created.organization.slug,
                        "owner": owner,
                        "api_key": created.api_key_secret,
                    }
                )
            )
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Created organization {created.organization.slug} (schema {created.organization.schema_name}, {created.provisioned_by})."
            )
        )
        self.stdout.write(
            f"Owner login: {owner['username']}"
            + (
                f" / {owner['password']}"
                if owner["password"]
                else " (existing user, password unchanged)"
            )
        )
        self.stdout.write(f"Owner API key (shown once): {created.api_key_secret}")
