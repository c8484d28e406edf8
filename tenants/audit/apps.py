from django.apps import AppConfig


class AuditConfig(AppConfig):
    # Tenant schema only: each organization's audit trail lives beside its own data.
    name = "tenants.audit"
    label = "audit"
    verbose_name = "Audit trail"
    default_auto_field = "django.db.models.BigAutoField"
