from django.apps import AppConfig


class TrustConfig(AppConfig):
    # Tenant schema: each organization's snapshots, proofs and transparency log live beside its runs.
    name = "engine.trust"
    label = "trust"
    verbose_name = "Run proofs and transparency log"
    default_auto_field = "django.db.models.BigAutoField"
