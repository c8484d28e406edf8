"""Django's admin app with Cadence's operator site as the default `admin.site`."""

from django.contrib.admin.apps import AdminConfig


class CadenceAdminConfig(AdminConfig):
    default_site = "tenants.operator_admin.OperatorAdminSite"
