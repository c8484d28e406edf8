"""The landing page at `/`: what this deployment is, sign-in, and the way to each organization."""

from __future__ import annotations

from django.shortcuts import render

from tenants.selectors import memberships_for_user


def landing_page(request):
    memberships = []
    if request.user.is_authenticated and request.user.is_active:
        memberships = list(memberships_for_user(user=request.user))
    return render(
        request,
        "landing.html",
        {
            "memberships": memberships,
            "is_operator": request.user.is_authenticated and request.user.is_staff,
        },
    )
