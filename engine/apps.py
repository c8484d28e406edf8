from django.apps import AppConfig


class EngineConfig(AppConfig):
    # The Django side of runs; the library in this package imports no Django (see engine/README.md).
    name = "engine"
    verbose_name = "Runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from engine.runs.runlog import handler_install

        # Lines logged while a run runs are stored and streamed with it (engine/runs/runlog.py).
        handler_install(settings.CADENCE_RUN_LOG_LEVEL)
