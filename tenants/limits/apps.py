from django.apps import AppConfig


class LimitsConfig(AppConfig):
    # Public schema only: overrides, per-key limits and usage are read across organizations by
    # operators, and every request's limit lookup stays in one schema.
    name = "tenants.limits"
    label = "limits"
    verbose_name = "Limits and usage"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from engine.runs.pipeline import register
        from tenants.limits.turns import budget_extension

        # Every turn, whatever triggered it: budgets reserved and settled, usage recorded.
        register(budget_extension)
