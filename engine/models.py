"""The Django side of runs (tenant schema): every orchestrator turn is a Run with its step events.

Kept apart from the library modules: `import engine` never imports this (see engine/README.md).
"""

from __future__ import annotations

import uuid

from django.db import models


class Run(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Trigger(models.TextChoices):
        CHAT = "chat", "Chat (WebSocket)"
        REST = "rest", "REST"
        OPENAI = "openai", "OpenAI-compatible API"
        INVOKE = "invoke", "Invoke"
        ADMIN = "admin", "Admin try-it"
        QUEUE = "queue", "Queued run"
        REPLAY = "replay", "Replay"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    orchestrator = models.ForeignKey(
        "orchestrators.OrchestratorInstance",
        null=True,
        on_delete=models.SET_NULL,
        related_name="runs",
    )
    orchestrator_slug = models.CharField(max_length=63)
    config_hash = models.CharField(max_length=64, blank=True)
    conversation_id = models.UUIDField(null=True, blank=True, db_index=True)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    principal = models.CharField(max_length=200, blank=True)
    # Whose run it is (issue 9: members see their own runs, admins and owners all of them): the
    # user or API key that started it, or that owns the conversation it ran in.
    owner_user_id = models.BigIntegerField(null=True, blank=True)
    owner_api_key_id = models.UUIDField(null=True, blank=True)
    # The orchestrator's team when the run was created (null: organization-wide); members see
    # a run only while its team is visible to them (tenants/teams/scoping.py).
    team = models.ForeignKey(
        "teams.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    input = models.JSONField(default=dict, blank=True)
    output = models.TextField(blank=True)
    usage = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    # Where it ran: orchestrator version and hash, LLM configuration, plugin versions, process.
    environment = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    # The definition the run executes (engine/trust): recovery, retries and replay use it.
    snapshot = models.ForeignKey(
        "trust.DefinitionSnapshot",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="runs",
    )
    # The process running it (engine/runs/owners.py) and its last sign of life, while `running`:
    # a run whose owner is gone is finished `failed` (`interrupted`) by engine/runs/orphans.py.
    owner = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    # A replay (engine/runs/replay.py) is a run of its own: the run it replays, and the step it
    # re-ran (or the step it re-ran the flow from: its input says which).
    replay_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replays"
    )
    replay_step = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        # The run list is keyset-paginated on (started_at, id), under each filter it offers.
        indexes = [
            models.Index(fields=["-started_at", "-id"], name="run_recent"),
            models.Index(fields=["status", "-started_at", "-id"], name="run_status_recent"),
            models.Index(fields=["orchestrator", "-started_at", "-id"], name="run_orch_recent"),
            models.Index(fields=["trigger", "-started_at", "-id"], name="run_trigger_recent"),
            models.Index(fields=["owner_user_id", "-started_at", "-id"], name="run_user_recent"),
            models.Index(fields=["owner_api_key_id", "-started_at", "-id"], name="run_key_recent"),
            models.Index(fields=["error_code", "-started_at", "-id"], name="run_error_recent"),
            # The orphan sweep reads only runs in flight, in every schema, every few seconds.
            models.Index(
                fields=["heartbeat_at"],
                condition=models.Q(status="running"),
                name="run_inflight",
            ),
            models.Index(
                fields=["orchestrator_slug", "-started_at", "-id"], name="run_slug_recent"
            ),
            models.Index(fields=["duration_ms"], name="run_duration"),
            # `q` (text in errors and step names) uses trigram indexes that exist only where
            # PostgreSQL has pg_trgm: created by engine/migrations/0006, not declared here.
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(
                    status__in=["queued", "running", "succeeded", "failed", "cancelled"]
                ),
                name="run_status_valid",
            )
        ]

    def __str__(self) -> str:
        return f"{self.orchestrator_slug} {self.status} {self.started_at:%Y-%m-%d %H:%M:%S}"


class RunEvent(models.Model):
    """One step of a run: a note (or `.sync` group, `.split`, child cadence, graph node, agent
    turn), a model call, a tool call. `parent_seq` nests it exactly; `data` holds its `inputs`
    and `outputs` (and, for a model call, `llm`: provider, model, parameters, tokens, time to
    first token), truncated past engine.runs.recorder.INLINE_BYTES with the whole in `payload`
    (a file in the default storage)."""

    id = models.BigAutoField(primary_key=True)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    parent_seq = models.PositiveIntegerField(null=True, blank=True)
    kind = models.CharField(
        max_length=16
    )  # note | sync | split | child | sequence | llm_call | tool_call | step
    name = models.CharField(max_length=200)
    # running | completed | failed | interrupted (the run ended before the step did)
    outcome = models.CharField(max_length=16, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    error_type = models.CharField(max_length=200, blank=True)
    stack = models.TextField(blank=True)
    cpu_ms = models.FloatField(null=True, blank=True)
    memory_kb = models.IntegerField(null=True, blank=True)
    payload = models.CharField(max_length=300, blank=True)
    at = models.DateTimeField()  # when it ended (or was recorded)
    # The live run socket's cursors (engine/runs/live.py) of the frames that announced the step's
    # start and its end, so that replaying an ended run gives the frames, and cursors, a client
    # saw live. Null for a step recorded before the socket existed, or never announced started.
    start_cursor = models.PositiveIntegerField(null=True, blank=True)
    end_cursor = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="runevent_run_seq_unique"),
            models.CheckConstraint(
                condition=models.Q(parent_seq__isnull=True)
                | models.Q(parent_seq__lt=models.F("seq")),
                name="runevent_parent_before_child",
            ),
        ]
        # The run list's `q` reads step names' run ids from this index alone
        # (engine/runs/search.py; engine/migrations/0011 builds it concurrently).
        indexes = [models.Index(fields=["name", "run"], name="runevent_name_run")]


class RunLog(models.Model):
    """A log line emitted while a run ran (engine/runs/runlog.py): any `logging` call made by its
    notes, tools and model calls, with the step it ran in. Bounded per run
    (settings.CADENCE_RUN_LOG_MAX_LINES; past it one warning line says how many were dropped),
    secrets redacted before it is stored. The organization is the schema it lives in."""

    class Level(models.TextChoices):
        DEBUG = "debug", "Debug"
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"
        CRITICAL = "critical", "Critical"

    id = models.BigAutoField(primary_key=True)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="logs")
    # The run's frame cursor (the live socket's), also the order of its lines.
    cursor = models.PositiveIntegerField()
    step_seq = models.PositiveIntegerField(null=True, blank=True)
    level = models.CharField(max_length=8, choices=Level.choices)
    logger = models.CharField(max_length=200, blank=True)
    message = models.TextField()
    # The process that ran it: CADENCE_WORKER_ID, else <host>:<pid>.
    worker = models.CharField(max_length=200, blank=True)
    at = models.DateTimeField()

    class Meta:
        ordering = ["run", "cursor"]
        constraints = [
            models.UniqueConstraint(fields=["run", "cursor"], name="runlog_run_cursor_unique"),
            models.CheckConstraint(
                condition=models.Q(level__in=["debug", "info", "warning", "error", "critical"]),
                name="runlog_level_valid",
            ),
        ]
        indexes = [models.Index(fields=["run", "step_seq", "cursor"], name="runlog_run_step")]

    def __str__(self) -> str:
        return f"{self.level} {self.logger}: {self.message[:60]}"
