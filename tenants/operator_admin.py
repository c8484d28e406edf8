"""The operators' admin at /admin/ (platform staff): branding and the deployment's dashboard.

Installed as the default `admin.site` (tenants/admin_config.py), so every `@admin.register` without
a `site` lands here. The models it shows are registered in tenants/admin.py.
"""

from __future__ import annotations

from django.contrib import admin


class OperatorAdminSite(admin.AdminSite):
    site_header = "Cadence operator admin"
    site_title = "Cadence operator"
    index_title = "Deployment dashboard"
    index_template = "cadence_admin/operator_index.html"

    def index(self, request, extra_context=None):
        from cadence_site.dashboards import operator_dashboard

        extra = {"dashboard": operator_dashboard()}
        extra.update(extra_context or {})
        return super().index(request, extra)
