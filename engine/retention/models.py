"""What retention leaves of a purged run that was proven (tenant schema).

A run's execution proof and its transparency-log entry are append-only (engine/trust: triggers
refuse DELETE), and the log's audit reports a log entry whose run is gone as tampering. A run
purged by retention keeps this small record instead: the log's audit accepts it as purged (not
removed), and the proof and inclusion endpoints still answer for it, to whoever could read the
run. Its inputs, outputs, steps and payload files are gone, so its step records can no longer be
recomputed against the proof: the proof's signature, its digest's place in the log and every
signed tree head still verify.
"""

from __future__ import annotations

from django.db import models


class PurgedRun(models.Model):
    run_id = models.UUIDField(primary_key=True)
    orchestrator_slug = models.CharField(max_length=63)
    status = models.CharField(max_length=16)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    owner_user_id = models.BigIntegerField(null=True, blank=True)
    owner_api_key_id = models.UUIDField(null=True, blank=True)
    purged_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.run_id} (purged {self.purged_at:%Y-%m-%d})"
