"""`manage.py verify_run <run id> [--org slug] [--audit]`: exit 0 only when everything verifies."""

from __future__ import annotations

import uuid
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django_tenants.utils import schema_context

from engine.trust import log, signing
from engine.trust.bundle import bundle_build
from engine.trust.verify_bundle import open_checkpoint, split_notes, verify_bundle


class Command(BaseCommand):
    help = "Verify a run's proof, step records, snapshot, log inclusion and witnessed checkpoints."

    def add_arguments(self, parser):
        parser.add_argument("run_id")
        parser.add_argument("--org", help="the organization's slug (default: search them all)")
        parser.add_argument("--witnessed", help="a witness file (default: CADENCE_WITNESS_FILE)")
        parser.add_argument(
            "--audit", action="store_true", help="also recompute the organization's whole log"
        )

    def _find(self, run_id: uuid.UUID, slug: str | None) -> str:
        from engine.models import Run
        from engine.retention.models import PurgedRun
        from tenants.models import Organization

        orgs = Organization.objects.exclude(
            schema_name__in=[settings.PUBLIC_SCHEMA_NAME, settings.CADENCE_TEMPLATE_SCHEMA]
        )
        if slug:
            orgs = orgs.filter(slug=slug)
        for schema_name in orgs.values_list("schema_name", flat=True):
            with schema_context(schema_name):
                if Run.objects.filter(pk=run_id).exists():
                    return schema_name
                purged = PurgedRun.objects.filter(pk=run_id).first()
                if purged is not None:
                    raise CommandError(
                        f"run {run_id} was purged by retention on {purged.purged_at:%Y-%m-%d}: "
                        "its step records are gone, so they cannot be checked against its "
                        "proof; the proof and its log entry remain (…/proof/, "
                        "…/transparency/inclusion/?run=)"
                    )
        raise CommandError(f"run {run_id} not found" + (f" in {slug}" if slug else ""))

    def handle(self, *args, **options):
        from engine.models import Run
        from engine.trust.models import ExecutionProof

        try:
            run_id = uuid.UUID(options["run_id"])
        except ValueError:
            raise CommandError("the run id is not a UUID") from None
        schema_name = self._find(run_id, options["org"])
        keys = signing.keyring().verifiers
        witness_path = options["witnessed"] or settings.CADENCE_WITNESS_FILE
        witnessed = split_notes(Path(witness_path).read_text()) if witness_path else []
        with schema_context(schema_name):
            run = Run.objects.get(pk=run_id)
            proof = ExecutionProof.objects.filter(run_id=run_id).first()
            if proof is None:
                raise CommandError(f"run {run_id} has no proof")
            origin = log.log_origin()
            sizes = []
            for note in witnessed:
                try:
                    checkpoint = open_checkpoint(note, keys)
                except Exception:  # reported by verify_bundle with its reason
                    continue
                if checkpoint.origin == origin:
                    sizes.append(checkpoint.size)
            bundle = bundle_build(run=run, proof=proof, since=sizes)
            report = verify_bundle(bundle, keys, witnessed)
            problems = log.log_audit() if options["audit"] else []
        for name, ok, detail in report.checks:
            self.stdout.write(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        for problem in problems:
            self.stdout.write(f"FAIL log audit: {problem}")
        if report.ok and not problems:
            self.stdout.write("verified")
            return
        raise CommandError("NOT VERIFIED")
