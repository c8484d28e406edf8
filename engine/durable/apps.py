from django.apps import AppConfig


class DurableConfig(AppConfig):
    # Tenant schema: checkpoints and lock fences belong to the organization whose runs they guard.
    name = "engine.durable"
    label = "durable"
    verbose_name = "Durable runs"
    default_auto_field = "django.db.models.BigAutoField"
