from django.apps import AppConfig


class AlertsConfig(AppConfig):
    # Tenant schema: an organization's rules and what they fired live beside its runs.
    name = "engine.alerts"
    label = "alerts"
    verbose_name = "Alerts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from engine.alerts.evaluate import text_source_register
        from engine.alerts.turns import alerting_runs
        from engine.runs.pipeline import register
        from engine.runs.runlog import log_texts

        register(alerting_runs)
        # log_match rules search the run's log lines, beside its errors.
        text_source_register(log_texts)
