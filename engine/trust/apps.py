from django.apps import AppConfig


class TrustConfig(AppConfig):
    # Tenant schema: each organization's snapshots, proofs and transparency log live beside its runs.
    name = "engine.trust"
    label = "trust"
    verbose_name = "Run proofs and transparency log"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from engine.runs.pipeline import register
        from engine.trust.turns import proven_runs

        register(proven_runs)
