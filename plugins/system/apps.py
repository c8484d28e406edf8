from django.apps import AppConfig


class SystemPluginsConfig(AppConfig):
    # Public schema only: the operators' catalog of system plugins.
    name = "plugins.system"
    label = "system_plugins"
    verbose_name = "System plugins"
    default_auto_field = "django.db.models.BigAutoField"
