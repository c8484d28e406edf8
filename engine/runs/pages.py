"""The run view in an organization's admin: /orgs/<slug>/admin/engine/run/<id>/view/.

The page is a template and plain JavaScript (static/cadence/run_view.js) that reads the run
through the same REST endpoints and WebSocket as any client, with the user's session: the flow
of its steps drawn by the vendored mermaid and coloured by status, a timeline, the step table
(live over `/ws/orgs/<slug>/runs/<id>/`, else polling `…/steps/` while the run runs), each
step's inputs, outputs, diff, error, stack and resources, the lineage of a field, the run's log
and a replay button. A panel whose endpoint answers 404 is hidden. The page grants nothing: a
run the user may not read is the same 404 here as on the API, and the replay button is offered
to admins and owners only (the API checks it again).
"""

from __future__ import annotations

from django.http import Http404
from django.template.response import TemplateResponse
from django.views.decorators.csrf import ensure_csrf_cookie

from cadence_site.errors import ApplicationError
from engine.runs.selectors import run_get_for_user
from tenants.roles import Role, role_at_least
from tenants.tenant_admin import request_role


@ensure_csrf_cookie  # the replay button's POST sends the token from this cookie
def run_view(request, object_id: str, *, model_admin):
    role = request_role(request)
    try:
        run = run_get_for_user(principal=request.user, role=role, run_id=object_id, org=request.org)
    except ApplicationError as exc:  # unknown, malformed or another member's: one 404
        raise Http404("No such run.") from exc
    org = request.org
    root = request.META.get("SCRIPT_NAME", "").rstrip("/")
    config = {
        "org": org.slug,
        "run": str(run.id),
        "api": f"{root}/api/v1/orgs/{org.slug}/runs/{run.id}/",
        "ws": f"{root}/ws/orgs/{org.slug}/runs/{run.id}/",
        "page": f"{root}/orgs/{org.slug}/admin/engine/run/",
        "canReplay": role_at_least(role, Role.ADMIN),
    }
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": f"Run of {run.orchestrator_slug}",
        "subtitle": str(run.id),
        "run": run,
        "config": config,
    }
    return TemplateResponse(request, "runs/run_view.html", context)
