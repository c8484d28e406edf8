from django.apps import AppConfig


class OrchestratorsConfig(AppConfig):
    name = "orchestrators"
    default_auto_field = "django.db.models.BigAutoField"
