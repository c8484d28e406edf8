from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.views import LogoutView
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from cadence_site import health
from cadence_site.metrics import metrics_view

urlpatterns = [
    # First: a pattern that does not match costs nothing, an include() that does not match
    # raises (and catches) Resolver404, which the 13 includes before it did on every /v1 call.
    path("v1/", include("chat.openai_urls")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/", include("tenants.urls")),
    path("api/v1/", include("tenants.teams.urls")),
    path("api/v1/", include("tenants.invitations.urls")),
    path("api/v1/", include("tenants.sso.urls")),
    path("api/v1/", include("orchestrators.urls")),
    path("api/v1/", include("chat.urls")),
    path("api/v1/", include("tenants.limits.urls")),
    path("api/v1/", include("plugins.urls")),
    path("api/v1/", include("engine.runs.urls")),
    path("api/v1/", include("engine.trust.urls")),
    path("api/v1/", include("engine.durable.urls")),
    path("api/v1/", include("engine.alerts.urls")),
]

handler400 = "cadence_site.errors.handler400"
handler403 = "cadence_site.errors.handler403"
handler404 = "cadence_site.errors.handler404"
handler500 = "cadence_site.errors.handler500"

from tenants.invitations.pages import invitation_page  # noqa: E402
from tenants.landing import landing_page  # noqa: E402
from tenants.tenant_admin import login_page  # noqa: E402

urlpatterns += [path("accounts/login/", login_page, name="login")]
urlpatterns += [path("invitations/", invitation_page, name="invitation-page")]
urlpatterns += [
    path("accounts/logout/", LogoutView.as_view(next_page="/"), name="logout"),
    path("", landing_page, name="landing"),
]
