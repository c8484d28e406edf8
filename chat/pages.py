"""The chat page at /orgs/<slug>/chat/: a template and a little plain JavaScript (chat/static/chat/).

The page only lists what the user may pick; everything it does afterwards goes through the same
REST endpoints and WebSocket as any other client, so it gets no privilege of its own.
"""

from __future__ import annotations

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpResponseForbidden
from django.shortcuts import render
from django.utils.html import escape
from django.views.decorators.csrf import ensure_csrf_cookie

from chat import services
from orchestrators.models import OrchestratorInstance
from tenants.roles import Role, role_at_least
from tenants.teams.scoping import scoped, team_scope
from tenants.tenant_admin import request_role


@ensure_csrf_cookie  # the page's fetch() calls send the token from this cookie in X-CSRFToken
def chat_page(request):
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    role = request_role(request)
    if role is None:
        # Same answer as an organization that does not exist.
        raise Http404("No such organization.")
    org = request.org
    if not org.is_active:
        return HttpResponseForbidden(f"The organization {escape(org.slug)} is suspended.")
    scope = team_scope(request.user, role)
    ready = OrchestratorInstance.objects.filter(status=OrchestratorInstance.Status.READY)
    # What the user may chat with: their teams', shared with their teams to use, and the
    # organization's (tenants/teams/scoping.py).
    orchestrators = list(scoped(ready, scope, level="use").only("id", "slug", "name"))
    conversations = list(services.conversation_list(principal=request.user, scope=scope)[:200])
    can_send = role_at_least(role, Role.MEMBER)
    # Absolute paths: the API and the WebSocket stay under /api/v1/orgs/<slug>/ and /ws/orgs/<slug>/
    # even when the page itself is served on the organization's own host.
    root = request.META.get("SCRIPT_NAME", "").rstrip("/")
    config = {
        "org": org.slug,
        "role": role,
        "canSend": can_send,
        "api": f"{root}/api/v1/orgs/{org.slug}/",
        "ws": f"{root}/ws/orgs/{org.slug}/conversations/",
    }
    return render(
        request,
        "chat/page.html",
        {
            "org": org,
            "org_slug": org.slug,
            "role": role,
            "can_send": can_send,
            "orchestrators": orchestrators,
            "conversations": conversations,
            "config": config,
        },
    )
