"""Run heartbeats (engine/runs/orphans.py): the beats of the turns running on one event loop are
written together, each run's own reply so far, only while it runs, in its own organization."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace

from django.utils import timezone
from django_tenants.utils import schema_context

from engine.models import Run
from engine.runs import orphans


def _run(schema_name: str, status: str, at) -> str:
    with schema_context(schema_name):
        return str(
            Run.objects.create(
                orchestrator_slug="beats",
                trigger="rest",
                status=status,
                owner="elsewhere",
                heartbeat_at=at,
                output="before",
            ).pk
        )


def _turn(schema_name: str, run_id: str, text: str):
    return SimpleNamespace(
        acquired=object(),
        finishing=False,
        request=SimpleNamespace(schema_name=schema_name, run_id=run_id),
        run_id=run_id,
        text=[text],
    )


def test_beats_of_one_loop_are_written_together_for_running_runs_only(world, committed_db):
    old = timezone.now() - timedelta(hours=1)
    alpha = [_run("org_alpha", Run.Status.RUNNING, old) for _ in range(3)]
    ended = _run("org_alpha", Run.Status.SUCCEEDED, old)
    bravo = _run("org_bravo", Run.Status.RUNNING, old)
    try:
        turns = [_turn("org_alpha", run_id, f"reply {n}") for n, run_id in enumerate(alpha)]
        turns += [_turn("org_alpha", ended, "late"), _turn("org_bravo", bravo, "bravo's")]

        async def beat_all():
            # A turn that beats again before the write keeps only its latest text.
            first = asyncio.ensure_future(orphans.run_heartbeat.on_progress(turns[0]))
            await asyncio.sleep(0)
            turns[0].text.append(" and more")
            await asyncio.gather(
                first, *(orphans.run_heartbeat.on_progress(turn) for turn in turns)
            )

        asyncio.run(beat_all())

        with schema_context("org_alpha"):
            rows = {
                str(pk): (output, at)
                for pk, output, at in Run.objects.filter(pk__in=[*alpha, ended]).values_list(
                    "pk", "output", "heartbeat_at"
                )
            }
        with schema_context("org_bravo"):
            bravo_row = Run.objects.filter(pk=bravo).values_list("output", "heartbeat_at").get()
        assert [rows[run_id][0] for run_id in alpha] == ["reply 0 and more", "reply 1", "reply 2"]
        beats = {rows[run_id][1] for run_id in alpha}
        assert len(beats) == 1  # one statement's time: written together
        assert beats.pop() > old
        assert rows[ended] == ("before", old)  # ended: never written by a heartbeat
        assert bravo_row[0] == "bravo's" and bravo_row[1] > old
    finally:
        with schema_context("org_alpha"):
            Run.objects.filter(pk__in=[*alpha, ended]).delete()
        with schema_context("org_bravo"):
            Run.objects.filter(pk=bravo).delete()
