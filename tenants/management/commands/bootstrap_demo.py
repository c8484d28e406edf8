"""`manage.py bootstrap_demo`: the operator login and the demo organization `acme`, idempotently.

Credentials are kept in var/demo-credentials.json (mode 0600) and reused on later runs; a
password that no longer matches is reset and a revoked or missing key is replaced, so the file
always holds working credentials.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from tenants.models import Membership, Organization
from tenants.roles import Role
from tenants.selectors import api_key_by_secret
from tenants.services import api_key_create, generate_password, organization_create

DEMO_SLUG = "acme"
OPERATOR = "operator"
OWNER_EMAIL = "owner@acme.example"


def _write_private(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class Command(BaseCommand):
    help = "Create (or verify) the operator login and the demo organization acme; print and store the credentials."

    def add_arguments(self, parser):
        parser.add_argument(
            "--credentials", default=str(settings.VAR_DIR / "demo-credentials.json")
        )
        parser.add_argument(
            "--base-url", default=f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"
        )

    def handle(self, *args, **options):
        path = Path(options["credentials"])
        saved = json.loads(path.read_text()) if path.exists() else {}
        User = get_user_model()

        with transaction.atomic():
            operator_password = (saved.get("operator") or {}).get("password") or generate_password()
            operator, _ = User.objects.get_or_create(
                username=OPERATOR,
                defaults={
                    "email": "operator@cadence.local",
                    "is_staff": True,
                    "is_superuser": True,
                },
            )
            if not operator.check_password(operator_password) or not operator.is_staff:
                operator.set_password(operator_password)
                operator.is_staff = operator.is_superuser = operator.is_active = True
                operator.save()

        org = Organization.objects.filter(slug=DEMO_SLUG).first()
        owner_password = (saved.get("owner") or {}).get("password")
        api_key = saved.get("api_key")
        if org is None:
            created = organization_create(
                name="Acme Inc.",
                slug=DEMO_SLUG,
                owner_email=OWNER_EMAIL,
                owner_username="acme-owner",
            )
            org, owner, api_key = created.organization, created.owner, created.api_key_secret
            owner_password = created.owner_password or owner_password
        owner = User.objects.filter(username="acme-owner").first()
        if owner is None:
            owner = User.objects.create_user(username="acme-owner", email=OWNER_EMAIL)
        Membership.objects.get_or_create(
            user=owner, organization=org, defaults={"role": Role.OWNER}
        )
        if not owner_password or not owner.check_password(owner_password):
            owner_password = owner_password or generate_password()
            owner.set_password(owner_password)
            owner.save(update_fields=["password"])
        key = api_key_by_secret(secret=api_key) if api_key else None
        if key is None or key.organization_id != org.id or key.revoked_at is not None:
            _, api_key = api_key_create(
                org=org, name="Demo key", role=Role.OWNER, creator_role=Role.OWNER, created_by=owner
            )
        self._extend(org)

        data = {
            "operator": {"username": OPERATOR, "password": operator_password},
            "org": DEMO_SLUG,
            "owner": {"username": owner.get_username(), "password": owner_password},
            "api_key": api_key,
        }
        _write_private(path, data)
        base = options["base_url"].rstrip("/")
        lines = [
            "",
            "Cadence is ready.",
            f"  Operator admin:      {base}/admin/            ({OPERATOR} / {operator_password})",
            f"  Organization admin:  {base}/orgs/{DEMO_SLUG}/admin/  ({owner.get_username()} / {owner_password})",
            f"  API docs:            {base}/api/docs/",
            f"  Demo API key (acme): {api_key}",
            f"  Try: curl -H 'Authorization: Bearer {api_key}' {base}/api/v1/orgs/{DEMO_SLUG}/",
            f"  Saved to {path} (mode 0600).",
            "",
        ]
        self.stdout.write("\n".join(lines))

    def _extend(self, org: Organization) -> None:
        """Later apps add demo content here (an LLM configuration, a ready orchestrator)."""
        from django.utils.module_loading import import_string

        for dotted in getattr(settings, "CADENCE_DEMO_EXTENSIONS", []):
            import_string(dotted)(org=org, stdout=self.stdout)
