from django.apps import AppConfig


class EngineConfig(AppConfig):
    # The Django side of runs; the library in this package imports no Django (see engine/README.md).
    name = "engine"
    verbose_name = "Runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from engine.runs import tasks  # noqa: F401 - the orphan sweep's Celery task (beat)
        from engine.runs.orphans import run_heartbeat
        from engine.runs.pipeline import register

        # Every run's owner and heartbeat, for orphan recovery (engine/runs/orphans.py).
        register(run_heartbeat)
