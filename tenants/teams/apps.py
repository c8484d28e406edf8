from django.apps import AppConfig


class TeamsConfig(AppConfig):
    # Tenant schema only: an organization's teams live beside the resources they will scope.
    name = "tenants.teams"
    label = "teams"
    verbose_name = "Teams"
    default_auto_field = "django.db.models.BigAutoField"
