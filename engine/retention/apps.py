from django.apps import AppConfig


class RetentionConfig(AppConfig):
    # Tenant schema: the record of an organization's purged runs lives beside its proofs.
    name = "engine.retention"
    label = "retention"
    verbose_name = "Run retention"
    default_auto_field = "django.db.models.BigAutoField"
