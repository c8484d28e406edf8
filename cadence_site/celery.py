from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cadence_site.settings")

app = Celery("cadence")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _start_process_services(**_kwargs) -> None:
    # Each worker process keeps its own runtime pool and listens for lifecycle events.
    from orchestrators.pool import start_process_services

    start_process_services()


@worker_process_shutdown.connect
def _stop_process_telemetry(pid=None, **_kwargs) -> None:
    # A prefork child ends with os._exit (no atexit): send its queued traces, and take its live
    # gauges out of /metrics' sum.
    from cadence_site.metrics import mark_process_dead
    from engine.runs import traces

    traces.flush(timeout=5.0)
    mark_process_dead(pid or os.getpid())


@worker_shutdown.connect
def _stop_worker_telemetry(**_kwargs) -> None:
    from cadence_site.metrics import mark_process_dead
    from engine.runs import traces

    traces.flush(timeout=5.0)
    mark_process_dead(os.getpid())
