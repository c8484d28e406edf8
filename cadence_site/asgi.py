"""HTTP and WebSocket in one ASGI application."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cadence_site.settings")
django.setup(set_prefix=False)  # what get_asgi_application() does before building its handler

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from cadence_site import socketwrites  # noqa: E402
from cadence_site.handlers import ApiASGIHandler, PagesASGIHandler, http_router  # noqa: E402
from cadence_site.lifespan import Lifespan  # noqa: E402
from cadence_site.requestlog import install_server_log_filters  # noqa: E402
from cadence_site.routing import websocket_urlpatterns  # noqa: E402
from tenants.limits.sockets import FrameRateLimitMiddleware  # noqa: E402
from tenants.ws import TenantWebsocketMiddleware  # noqa: E402

install_server_log_filters()
socketwrites.install()  # WebSocket frames written once per loop turn (cadence_site/socketwrites.py)

application = Lifespan(
    ProtocolTypeRouter(
        {
            "http": http_router(PagesASGIHandler(), ApiASGIHandler()),
            # No Origin validator in front: the Origin check guards cookie-authenticated sockets
            # only (tenants/ws.py), so scripts and apps with a ticket or a key connect too.
            "websocket": AuthMiddlewareStack(
                TenantWebsocketMiddleware(
                    FrameRateLimitMiddleware(URLRouter(websocket_urlpatterns))
                )
            ),
        }
    )
)
