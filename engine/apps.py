from django.apps import AppConfig


class EngineConfig(AppConfig):
    # The Django side of runs; the library in this package imports no Django (see engine/README.md).
    name = "engine"
    verbose_name = "Runs"
    default_auto_field = "django.db.models.BigAutoField"
