from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cadence_site.settings")

app = Celery("cadence")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _start_process_services(**_kwargs) -> None:
    # Each worker process keeps its own runtime pool and listens for lifecycle events.
    from orchestrators.pool import start_process_services

    start_process_services()
