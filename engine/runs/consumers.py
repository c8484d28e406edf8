"""Run sockets: one run's frames as they happen, and an organization's runs starting and ending.

`/ws/orgs/<slug>/runs/<id>/[?after=<cursor>]`: the run's step, log and run frames with cursor
above `after` (0, the default: from its first), each carrying its `cursor`. A running run is
followed on its Redis stream (engine/runs/live.py), which its publisher writes only once a socket
has marked the run watched (`live.run_watch_mark`, before the socket reads whether it ended; kept
while it is open), from the run's first frame; an ended one is replayed from the database with
the cursors it was stored with, as is a run that ended before its publisher saw the mark (the
socket looks at the database FIRST_LOOK_SECONDS after it opens while no frame came, then less
often). Either way the last frame is the run frame, after which the
socket closes (1000, "run_ended").

`/ws/orgs/<slug>/runs/[?orchestrator=<id or slug>]`: a run frame when a run starts and when it
ends, for the runs the caller may see (engine/runs/selectors.py's rule: admins and owners all,
members and viewers their own and their keys').

Who may connect, and for how long, is tenants/ws.py and tenants/ws_access.py: a revoked key, a
removed member or a suspended organization closes the socket; an admin watching a run that is
not theirs needs to stay admin.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer

from cadence_site import streams
from cadence_site.errors import ApplicationError
from engine.models import Run
from engine.runs import live, selectors
from tenants.context import in_public, in_tenant
from tenants.roles import Role, role_at_least

logger = logging.getLogger(__name__)

CLOSE_BAD_REQUEST = 4400
CLOSE_NOT_FOUND = 4404
MAX_CURSOR = 2**31 - 1
# How long a followed run may stay silent before the database is asked whether it ended (its
# process died, or Redis lost the end): then, after as long again, the rest is replayed from there.
QUIET_SECONDS = 5.0
FIRST_LOOK_SECONDS = 0.5  # > live.WATCH_POLL_SECONDS: the publisher had its chance to see it
_SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,63}$")


# Every run frame begins so (engine/runs/frames.py's templates, json.dumps of the others' dicts
# with `type` and `cursor` first): read without parsing the whole frame, which at thousands of
# frames a second was most of what following a run cost the consumer (benchmarks/run_ingest.py).
_HEAD = re.compile(r'\{"type": "([a-z_]+)", "cursor": (\d+)[,}]')


def frame_head(text: str) -> tuple[str, int]:
    """(type, cursor) of a run frame's JSON text."""
    head = _HEAD.match(text)
    if head is not None:
        return head.group(1), int(head.group(2))
    frame = json.loads(text)
    return frame["type"], frame["cursor"]


def _params(scope, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query's parameters (besides the ticket); ApplicationError names a bad one."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    params = {}
    for name, values in query.items():
        if name == "ticket":
            continue
        if name not in allowed:
            raise ApplicationError(f"unknown parameter {name[:40]}", "invalid_parameter")
        params[name] = values[-1]
    return params


def _watch(*, principal, role, org, run_id: str, after: int):
    """(whether only an admin may watch it, its frames after `after` if it ended, else None)."""
    run = selectors.run_get_for_user(principal=principal, role=role, run_id=run_id, org=org)
    admin_only = (
        role_at_least(role, Role.ADMIN)
        and not selectors.runs_visible(principal=principal, role=Role.MEMBER, org=org)
        .filter(pk=run.pk)
        .exists()
    )
    return admin_only, _ended_frames(run=run, after=after)


def _visible_run(*, principal, role, org, run_id: str) -> None:
    selectors.run_get_for_user(principal=principal, role=role, run_id=run_id, org=org)


def _ended_frames(*, run: Run, after: int) -> list[dict] | None:
    if run.status not in live.TERMINAL:
        return None
    return live.replay_frames(run=run, after=after)


def _frames_if_ended(*, run_id: str, after: int) -> list[dict] | None | bool:
    """The rest of the run's frames if it ended, None while it runs, False once it is gone."""
    run = Run.objects.filter(pk=run_id).first()
    return _ended_frames(run=run, after=after) if run is not None else False


def _run_status(*, run_id: str) -> str | None:
    return Run.objects.filter(pk=run_id).values_list("status", flat=True).first()


class RunConsumer(AsyncWebsocketConsumer):
    # Frames come from Redis streams through the process's hub, never the channel layer.
    channel_layer_alias = None

    async def connect(self):
        self.reader = None
        self.org = self.scope["org"]
        access = self.scope["access"]
        self.run_id = str(self.scope["url_route"]["kwargs"]["run_id"])
        try:
            after_text = _params(self.scope, ("after",)).get("after", "0")
            if not after_text.isdigit() or int(after_text) > MAX_CURSOR:
                raise ApplicationError("after must be a cursor (an integer ≥ 0)", "invalid_cursor")
            self.after = int(after_text)
            uuid.UUID(self.run_id)
        except ApplicationError as exc:
            return await self._refuse(CLOSE_BAD_REQUEST, f"{exc.code}: {exc.message}")
        except ValueError:
            return await self._refuse(CLOSE_NOT_FOUND, "run_not_found")
        await self._mark_watched()  # before reading whether it ended (live.run_watch_mark)
        # Closed when a team change takes the run out of the caller's sight.
        access.follow(self._gone)
        try:
            admin_only, frames = await in_tenant(
                self.org.schema_name,
                _watch,
                principal=self.scope["user"],
                role=access.role,
                org=self.org,
                run_id=self.run_id,
                after=self.after,
            )
        except ApplicationError:
            return await self._refuse(CLOSE_NOT_FOUND, "run_not_found")
        if admin_only:
            # Watching another member's run is an admin's right: kept while the socket is open.
            access.require(Role.ADMIN)
        await self.accept()
        if frames is not None:
            await self._replay(frames)
            return
        self.reader = asyncio.create_task(self._follow())

    async def _refuse(self, code: int, reason: str) -> None:
        await self.accept()
        await self.close(code=code, reason=reason[:123])

    async def _mark_watched(self) -> None:
        """Tell the run's publisher a socket watches (it publishes only then), until
        live.WATCH_TTL after the last call."""
        self.marked = time.monotonic()
        try:
            await live.run_watch_mark(self.org.schema_name, self.run_id)
        except Exception as exc:  # Redis away: its frames come from the database once it ends
            logger.warning("run watch not marked", extra={"error": str(exc)})

    async def _gone(self) -> tuple[int, str] | None:
        """(close code, reason) once the caller no longer sees the run (tenants/ws_access.py)."""
        try:
            await in_tenant(
                self.org.schema_name,
                _visible_run,
                principal=self.scope["user"],
                role=self.scope["access"].role,
                org=self.org,
                run_id=self.run_id,
            )
        except ApplicationError:
            return CLOSE_NOT_FOUND, "run_not_found"
        return None

    async def _replay(self, frames: list[dict]) -> None:
        for frame in frames:
            await self.send(text_data=json.dumps(frame, default=str))
        await self.close(code=1000, reason="run_ended")

    async def _follow(self) -> None:
        key = live.run_stream_key(self.org.schema_name, self.run_id)
        hub = streams.hub()
        queue = hub.subscribe(key, live.stream_id(self.after))
        # Until a first frame comes, the database is asked again soon, then less often: a run
        # that ended before its publisher saw the watch mark published nothing (live.py).
        quiet = FIRST_LOOK_SECONDS
        # Quiet, and the database says the run ended: its publisher writes the last frames once
        # the run is stored, at most live.CLOSE_SECONDS later, so they are given that long (and a
        # little) before the rest is replayed from the database. Replaying at once read a whole
        # run's steps for every socket whose run took long to store (benchmarks/run_ingest.py).
        ended_seen = False
        try:
            while True:
                if time.monotonic() - self.marked >= live.WATCH_REFRESH:
                    await self._mark_watched()
                try:
                    # Entries already queued are taken at once; else a timeout scope, not
                    # wait_for, which costs a task per call.
                    text = queue.get_nowait() if queue.qsize() else None
                    if text is None:
                        wait = live.CLOSE_SECONDS + 0.5 if ended_seen else quiet
                        async with asyncio.timeout(wait):
                            text = await queue.get()
                except TimeoutError:
                    quiet = min(quiet * 2, QUIET_SECONDS)
                    if not ended_seen:
                        status = await in_tenant(
                            self.org.schema_name, _run_status, run_id=self.run_id
                        )
                        if status is None:  # deleted meanwhile (retention, its organization)
                            return await self.close(code=CLOSE_NOT_FOUND, reason="run_not_found")
                        ended_seen = status in live.TERMINAL
                        continue
                    frames = await in_tenant(
                        self.org.schema_name, _frames_if_ended, run_id=self.run_id, after=self.after
                    )
                    if frames is False:
                        return await self.close(code=CLOSE_NOT_FOUND, reason="run_not_found")
                    if frames is not None:
                        return await self._replay(frames)
                    continue
                quiet = QUIET_SECONDS
                ended_seen = False
                # An entry holds the frames written together, in cursor order, the run frame
                # last if it is there: only its first and last frames' heads are read, unless
                # it begins at or below the cursor already sent (a resume inside an entry).
                lines = text.split("\n")
                kind, cursor = frame_head(lines[0])
                if cursor <= self.after:
                    lines = [line for line in lines if frame_head(line)[1] > self.after]
                    if not lines:
                        continue
                    kind, cursor = frame_head(lines[-1])
                elif len(lines) > 1:
                    kind, cursor = frame_head(lines[-1])
                self.after = cursor
                send = self.base_send  # the consumer's send() only wraps it, a frame at a time
                for line in lines:
                    await send({"type": "websocket.send", "text": line})
                if kind == "run":
                    return await self.close(code=1000, reason="run_ended")
        finally:
            hub.unsubscribe(key, queue)

    async def disconnect(self, code):
        if self.reader is not None and self.reader is not asyncio.current_task():
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)

    async def receive(self, text_data=None, bytes_data=None):
        await self.send(
            text_data=json.dumps(
                {
                    "type": "error",
                    "code": "read_only",
                    "message": "This socket only sends; it takes no frames.",
                }
            )
        )


def _key_created_by(*, key_id: str, org_id: int, user_id: int) -> bool:
    from tenants.models import ApiKey

    return ApiKey.objects.filter(pk=key_id, organization_id=org_id, created_by_id=user_id).exists()


class RunsConsumer(AsyncWebsocketConsumer):
    channel_layer_alias = None

    async def connect(self):
        self.reader = None
        self.org = self.scope["org"]
        user = self.scope["user"]
        key = getattr(user, "api_key", None)
        self.key_id = str(key.pk) if key is not None else None
        self.user_id = None if key is not None else user.pk
        self.own_keys: dict[str, bool] = {}  # key id → created by this user (asked once each)
        try:
            self.orchestrator = _params(self.scope, ("orchestrator",)).get("orchestrator")
        except ApplicationError as exc:
            return await self._refuse(f"{exc.code}: {exc.message}")
        if self.orchestrator is not None and not _SLUG.match(self.orchestrator):
            try:
                self.orchestrator = str(uuid.UUID(self.orchestrator))
            except ValueError:
                return await self._refuse(
                    "invalid_filter: orchestrator must be an orchestrator's id or slug"
                )
        stream = live.org_runs_stream_key(self.org.schema_name)
        try:
            start = await streams.hub().latest_id(stream)
        except Exception as exc:  # Redis away: the socket opens; runs reach it once it is back
            logger.warning("runs feed position unavailable", extra={"error": str(exc)})
            start = streams.now_id()
        await self.accept()
        self.reader = asyncio.create_task(self._follow(stream, start))

    async def _refuse(self, reason: str) -> None:
        await self.accept()
        await self.close(code=CLOSE_BAD_REQUEST, reason=reason[:123])

    async def _visible(self, owner: dict) -> bool:
        # The caller's current role (tenants/ws_access.py re-reads it as rights change).
        if role_at_least(self.scope["access"].role, Role.ADMIN):
            return True
        owner_key = owner.get("key")
        if self.key_id is not None:
            return owner_key is not None and str(owner_key) == self.key_id
        if owner.get("user") is not None and owner["user"] == self.user_id:
            return True
        if owner_key is None:
            return False
        owner_key = str(owner_key)
        if owner_key not in self.own_keys:
            self.own_keys[owner_key] = await in_public(
                _key_created_by, key_id=owner_key, org_id=self.org.id, user_id=self.user_id
            )
        return self.own_keys[owner_key]

    def _wanted(self, frame: dict) -> bool:
        if self.orchestrator is None:
            return True
        ref = frame.get("orchestrator") or {}
        return self.orchestrator in (ref.get("id"), ref.get("slug"))

    async def _follow(self, stream: str, start: str) -> None:
        hub = streams.hub()
        queue = hub.subscribe(stream, start)
        try:
            while True:
                # An entry holds the feed frames of one send, one per line (engine/runs/live.py).
                for text in (await queue.get()).split("\n"):
                    frame = json.loads(text)
                    owner = frame.pop("owner", None) or {}
                    if self._wanted(frame) and await self._visible(owner):
                        await self.send(text_data=json.dumps(frame))
        finally:
            hub.unsubscribe(stream, queue)

    async def disconnect(self, code):
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)

    async def receive(self, text_data=None, bytes_data=None):
        await self.send(
            text_data=json.dumps(
                {
                    "type": "error",
                    "code": "read_only",
                    "message": "This socket only sends; it takes no frames.",
                }
            )
        )
