from django.apps import AppConfig


class PluginsConfig(AppConfig):
    # Tenant schema: each organization's uploaded (declarative) plugins.
    name = "plugins"
    default_auto_field = "django.db.models.BigAutoField"
