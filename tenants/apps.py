from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Organizations and access"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from tenants.postgresql_backend import connections_local

        connections_local.install()
