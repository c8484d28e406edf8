"""`manage.py signing_key_rotate [--show]`: a new current signing key; old keys keep verifying."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from engine.trust import signing


class Command(BaseCommand):
    help = "Rotate the deployment's Ed25519 signing key (or --show the verifier keys)."

    def add_arguments(self, parser):
        parser.add_argument("--show", action="store_true", help="print the verifier keys only")

    def handle(self, *args, **options):
        if not options["show"]:
            try:
                signer = signing.rotate()
            except signing.SigningKeyError as exc:
                raise CommandError(str(exc)) from None
            self.stderr.write(f"new current key {signer.key_id.hex()}")
        for key in signing.keyring().verifiers:
            self.stdout.write(str(key))
