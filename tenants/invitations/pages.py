"""The page an invitation email links to: `/invitations/?token=…` (never the path: the access log
keeps paths and drops query strings)."""

from __future__ import annotations

from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect

from cadence_site.errors import ApplicationError
from tenants.invitations import services


@never_cache
@csrf_protect
def invitation_page(request):
    token = (request.POST.get("token") or request.GET.get("token") or "")[:100]
    try:
        invitation = services.invitation_for_token(token=token)
    except ApplicationError as exc:
        return render(request, "invitations/accept.html", {"error": exc.message}, status=404)
    context = {
        "invitation": invitation,
        "org": invitation.organization,
        "errors": {},
        "token": token,
    }
    if request.method == "POST":
        try:
            services.invitation_accept(
                token=token,
                user=request.user,
                username=request.POST.get("username", "")[:150],
                password=request.POST.get("password", "")[:128],
            )
        except ApplicationError as exc:
            context["error"] = exc.message
            context["errors"] = exc.extra.get("fields", {})
            context["username"] = request.POST.get("username", "")[:150]
            return render(request, "invitations/accept.html", context, status=exc.status_code)
        if request.user.is_authenticated:
            return redirect(f"/orgs/{invitation.organization.slug}/chat/")
        return redirect(f"/accounts/login/?next=/orgs/{invitation.organization.slug}/chat/")
    return render(request, "invitations/accept.html", context)
