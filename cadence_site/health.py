"""/healthz: the process answers. /readyz: each dependency, 503 when the database or Redis is down.

Failures are reported by kind (`ConnectionError`), never with the exception's text: that names
internal hosts and ports, and the probe answers anyone."""

from __future__ import annotations

import time

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse


def healthz(request):
    return JsonResponse({"status": "ok"})


def _check(fn) -> dict:
    started = time.perf_counter()
    try:
        detail = fn()
    except Exception as exc:  # a readiness probe reports failures, it does not raise them
        return {"status": "down", "error": type(exc).__name__}
    result = {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
    if isinstance(detail, dict):
        result.update(detail)
    return result


def _database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis():
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    finally:
        client.close()


def _broker():
    from kombu import Connection

    with Connection(settings.CELERY_BROKER_URL, connect_timeout=1) as conn:
        conn.ensure_connection(max_retries=1, timeout=1)
    return {"transport": conn.transport_cls if isinstance(conn.transport_cls, str) else "amqp"}


def _rabbitmq():
    if not settings.CADENCE_RABBITMQ_URL:
        return {
            "status": "not_configured",
            "warning": "CADENCE_RABBITMQ_URL is not set; lifecycle events use Redis.",
        }
    from kombu import Connection

    with Connection(settings.CADENCE_RABBITMQ_URL, connect_timeout=1) as conn:
        conn.ensure_connection(max_retries=1, timeout=1)


def readyz(request):
    checks = {"database": _check(_database), "redis": _check(_redis), "broker": _check(_broker)}
    rabbit = _check(_rabbitmq)
    if rabbit.get("warning"):
        rabbit = {"status": "not_configured", "warning": rabbit["warning"]}
    checks["rabbitmq"] = rabbit
    from orchestrators.lifecycle import transport_status

    checks["lifecycle_events"] = transport_status()
    # Without Redis Cadence still serves (slower, no live feeds or tickets), but a balancer should
    # prefer a process that has it: 503, naming what is missing.
    unavailable = [name for name in ("database", "redis") if checks[name]["status"] != "ok"]
    degraded = any(c["status"] == "down" for c in checks.values())
    if checks["database"]["status"] != "ok":
        status = "down"
    else:
        status = "degraded" if degraded else "ok"
    body = {"status": status, "checks": checks}
    if unavailable:
        body["unavailable"] = unavailable
    return JsonResponse(body, status=503 if unavailable else 200)
