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

        from django.db import connection
        from django.db.models.signals import post_delete, post_save

        from engine.alerts.models import AlertRule
        from engine.alerts.turns import rules_forget

        def forget(**_) -> None:
            rules_forget(connection.schema_name)

        post_save.connect(forget, sender=AlertRule, weak=False, dispatch_uid="alerts.rules_forget")
        post_delete.connect(
            forget, sender=AlertRule, weak=False, dispatch_uid="alerts.rules_forget_delete"
        )
