"""Per-request overhead of tenancy + API-key auth, at 2 and at 1,000 organizations; and of team
scoping on the busiest read paths, at 50 teams and 1,000 resources.

    .venv/bin/python benchmarks/request_overhead.py [--requests 2000] [--orgs 1000]
    .venv/bin/python benchmarks/request_overhead.py --mode teams [--requests 2000]

Starts the real server (uvicorn, as `make run` does) on a scratch database.

`--mode orgs` (the default) times `GET /api/v1/orgs/<slug>/` with an API key at 1 and 50
concurrent keep-alive clients: p50/p99 latency and requests/s, first with 2 organizations in
the database, then with 1,000. Targets: the figures do not change with the organization count
(within noise); p50 <= 10 ms at 1 client.

`--mode teams` times the conversation list (`GET /api/v1/orgs/<slug>/conversations/`) and
`GET /v1/models` with and without scoping, on identical answers. Without: an organization with
no teams, whose resources are the ones the scoped caller sees, read with an owner key (the
scoping rule adds nothing for owners and admins). With: an organization of 50 teams holding
1,000 orchestrators (19 per team, 50 organization-wide), 100 of them shared with a team, and
1,000 conversations (the caller's 200 in what it sees, 800 of other callers across every team),
read with a member's key (its user in 3 teams, one as maintainer). One keep-alive connection per
side, the requests alternating between them, so that both sides see the same load on a shared
machine (the order rotating each round). Target: scoping adds <= 1 ms at p50 (1 client per
side). A third side on the conversation list reads the scoped organization with its owner's key,
whose own copy of the caller's conversations is the same answer with no rule applied: the
difference between it and "with" is the rule's own cost, the rest is the larger organization.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

from _setup import ROOT, drop_scratch_database, percentile, use_scratch_database

# CADENCE_BENCH_DB: another scratch database name, for benchmarks run side by side.
DB_NAME = os.environ.get("CADENCE_BENCH_DB", "cadence_bench_requests")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _roundtrip(reader, writer, request: bytes) -> None:
    writer.write(request)
    status = await reader.readline()
    length, chunked = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
        elif name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:  # larger bodies (the conversation list) come in chunks
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)  # the chunk and its CRLF
            if size == 0:
                break
    else:
        await reader.readexactly(length)
    if not status.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response: {status!r}")


def _get(path: str, key: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n".encode()


async def _client(port: int, path: str, key: str, count: int, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = _get(path, key)
    try:
        for _ in range(count):
            started = time.perf_counter()
            await _roundtrip(reader, writer, request)
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def _paired(port: int, sides: dict[str, tuple[str, str]], total: int) -> dict:
    """One keep-alive connection per side, requests alternating between the sides, so both see
    the same machine (a shared one's load comes and goes): p50/p99 per side."""
    connections = {
        side: (await asyncio.open_connection("127.0.0.1", port), _get(path, key))
        for side, (path, key) in sides.items()
    }
    latencies: dict[str, list[float]] = {side: [] for side in sides}
    try:
        order = list(connections.items())
        for i in range(total + 20):
            # The order rotates each round, so no side is always the one after another's request.
            shift = i % len(order)
            for side, ((reader, writer), request) in order[shift:] + order[:shift]:
                started = time.perf_counter()
                await _roundtrip(reader, writer, request)
                if i >= 20:  # the first ones warm up
                    latencies[side].append(time.perf_counter() - started)
    finally:
        for (_, writer), _ in connections.values():
            writer.close()
    results = {
        side: {
            "p50_ms": percentile(values, 50) * 1000,
            "p99_ms": percentile(values, 99) * 1000,
            "min_ms": min(values) * 1000,
            "rps": len(values) / sum(values),
        }
        for side, values in latencies.items()
    }
    first, second, *more = list(sides)
    # Each request of the second side against the one of the first just before it: the median of
    # these differences is what a busy machine's drift disturbs least.
    differences = [b - a for a, b in zip(latencies[first], latencies[second], strict=True)]
    results["paired_median_ms"] = percentile(differences, 50) * 1000
    for side in more:  # further sides, each against the first the same way
        differences = [b - a for a, b in zip(latencies[first], latencies[side], strict=True)]
        results[f"paired_median_ms:{side}"] = percentile(differences, 50) * 1000
    return results


async def _measure(port: int, path: str, key: str, concurrency: int, total: int) -> dict:
    latencies: list[float] = []
    per_client = max(1, total // concurrency)
    await asyncio.gather(*(_client(port, path, key, 20, []) for _ in range(concurrency)))  # warm-up
    started = time.perf_counter()
    await asyncio.gather(
        *(_client(port, path, key, per_client, latencies) for _ in range(concurrency))
    )
    elapsed = time.perf_counter() - started
    return {
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "rps": len(latencies) / elapsed,
    }


def _wait_for(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


TEAMS = 50
PER_TEAM = 19
ORG_WIDE = 50
SHARED = 100
CALLER_TEAMS = 3
CALLER_CONVERSATIONS = 200
OTHER_CONVERSATIONS = 800


def _teams_world(owner_email: str) -> dict:
    """The two organizations of `--mode teams`; returns what to time: (key, paths) per side."""
    import uuid

    from django.contrib.auth import get_user_model
    from django_tenants.utils import schema_context

    from chat.models import Conversation
    from orchestrators.models import LLMConfig, OrchestratorInstance
    from tenants.models import Membership
    from tenants.services import api_key_create, organization_create
    from tenants.teams.models import (
        OrchestratorShare,
        ShareLevel,
        Team,
        TeamMembership,
        TeamRole,
    )

    ready = OrchestratorInstance.Status.READY
    scoped_org = organization_create(name="Teams", slug="teams", owner_email=owner_email)
    plain_org = organization_create(name="Plain", slug="plain", owner_email=owner_email)
    member = get_user_model().objects.create_user(
        username="bench-member", email="bench-member@example.test"
    )
    Membership.objects.create(user=member, organization=scoped_org.organization, role="member")
    member_key, member_secret = api_key_create(
        org=scoped_org.organization,
        name="member",
        role="member",
        creator_role="member",
        created_by=member,
    )

    def conversations(owner_key_id, visible, everyone) -> list:
        return [
            Conversation(
                orchestrator=visible[i % len(visible)],
                team_id=visible[i % len(visible)].team_id,
                owner_api_key_id=owner_key_id,
                title=f"mine {i}",
            )
            for i in range(CALLER_CONVERSATIONS)
        ] + [
            Conversation(
                orchestrator=everyone[i % len(everyone)],
                team_id=everyone[i % len(everyone)].team_id,
                owner_api_key_id=uuid.uuid4(),
                title=f"theirs {i}",
            )
            for i in range(OTHER_CONVERSATIONS)
        ]

    with schema_context("org_teams"):
        llm = LLMConfig.objects.create(name="offline", provider="offline", model="m")
        teams = Team.objects.bulk_create(
            Team(slug=f"team-{i:02d}", name=f"Team {i:02d}") for i in range(TEAMS)
        )
        mine = teams[:CALLER_TEAMS]
        TeamMembership.objects.bulk_create(
            TeamMembership(
                team=team,
                user_id=member.pk,
                role=TeamRole.MAINTAINER if i == 0 else TeamRole.MEMBER,
            )
            for i, team in enumerate(mine)
        )
        bots = OrchestratorInstance.objects.bulk_create(
            [
                OrchestratorInstance(
                    slug=f"bot-{t:02d}-{i:02d}",
                    name="bot",
                    llm_config=llm,
                    status=ready,
                    team=team,
                )
                for t, team in enumerate(teams)
                for i in range(PER_TEAM)
            ]
            + [
                OrchestratorInstance(slug=f"org-{i:02d}", name="bot", llm_config=llm, status=ready)
                for i in range(ORG_WIDE)
            ]
        )
        others = [b for b in bots if b.team_id is not None and b.team not in mine]
        # A tenth of the shares go to the caller's first team, the rest to teams it is not in.
        strangers = teams[CALLER_TEAMS:]
        shares = [
            (bot, mine[0] if i % 10 == 0 else strangers[(i + 1) % len(strangers)])
            for i, bot in enumerate(others[:SHARED])
        ]
        OrchestratorShare.objects.bulk_create(
            OrchestratorShare(orchestrator=bot, team=team, level=ShareLevel.USE)
            for bot, team in shares
            if bot.team_id != team.pk
        )
        shared_with_me = {bot.pk for bot, team in shares if team == mine[0]}
        visible = [b for b in bots if b.team_id is None or b.team in mine or b.pk in shared_with_me]
        Conversation.objects.bulk_create(conversations(member_key.pk, visible, bots))
        # The owner's copy of the caller's conversations: the same answer, read with no rule.
        Conversation.objects.bulk_create(
            conversations(scoped_org.api_key.pk, visible, bots)[:CALLER_CONVERSATIONS]
        )
    # The baseline: the same visible orchestrators and conversations, and no teams at all.
    with schema_context("org_plain"):
        llm = LLMConfig.objects.create(name="offline", provider="offline", model="m")
        plain = OrchestratorInstance.objects.bulk_create(
            OrchestratorInstance(slug=b.slug, name="bot", llm_config=llm, status=ready)
            for b in visible
        )
        Conversation.objects.bulk_create(conversations(plain_org.api_key.pk, plain, plain))
    return {
        "visible": len(visible),
        "without": plain_org.api_key_secret,
        "with": member_secret,
        # The scoped organization read by its owner, whose own copy of the caller's
        # conversations is the same answer (the rule adds nothing for owners): what the larger
        # organization costs by itself, apart from the rule (conversation list only).
        "owner": scoped_org.api_key_secret,
        "paths": {
            "conversation list": "/api/v1/orgs/{slug}/conversations/",
            "/v1/models": "/v1/models",
        },
        "slugs": {"without": "plain", "with": "teams", "owner": "teams"},
    }


def _teams_mode(port: int, world: dict, requests: int) -> None:
    print(
        f"{TEAMS} teams, {TEAMS * PER_TEAM + ORG_WIDE} orchestrators, {SHARED} shares, "
        f"{CALLER_CONVERSATIONS + OTHER_CONVERSATIONS} conversations; the caller sees "
        f"{world['visible']} orchestrators and its {CALLER_CONVERSATIONS} conversations",
        flush=True,
    )
    results: dict[tuple[str, str], dict] = {}
    for name, template in world["paths"].items():
        sides = {
            side: (template.format(slug=world["slugs"][side]), world[side])
            for side in ("without", "with", "owner")
            if side != "owner" or name == "conversation list"
        }
        measured = asyncio.run(_paired(port, sides, requests))
        for side in ("without", "with"):
            results[(name, side)] = r = measured[side]
            print(
                f"  {name:<18} {side:>7} scoping: p50 {r['p50_ms']:6.2f} ms  "
                f"p99 {r['p99_ms']:7.2f} ms  min {r['min_ms']:6.2f} ms  {r['rps']:8.1f} req/s",
                flush=True,
            )
        results[(name, "paired")] = {"median_ms": measured["paired_median_ms"]}
        r = measured.get("owner")
        if r is None:
            continue
        print(
            f"  {name:<18} the scoped organization read by its owner (no rule): p50 "
            f"{r['p50_ms']:6.2f} ms  min {r['min_ms']:6.2f} ms  paired vs without "
            f"{measured['paired_median_ms:owner']:+.2f} ms",
            flush=True,
        )
    print()
    for name in world["paths"]:
        added = results[(name, "with")]["p50_ms"] - results[(name, "without")]["p50_ms"]
        paired = results[(name, "paired")]["median_ms"]
        print(
            f"{name:<18} scoping adds {added:+.2f} ms at p50 (1 client), {paired:+.2f} ms as the "
            f"median of paired differences   target <= 1 ms   {'OK' if added <= 1 else 'MISSED'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--orgs", type=int, default=1000)
    parser.add_argument("--mode", choices=["orgs", "teams"], default="orgs")
    args = parser.parse_args()

    original = use_scratch_database(DB_NAME)
    import logging

    import django

    django.setup()
    logging.disable(logging.WARNING)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from tenants.services import organization_create

    server = None
    try:
        call_command("migrate", interactive=False, verbosity=0)
        get_user_model().objects.create_user(
            username="bench-owner", email="bench-owner@example.test"
        )
        target = organization_create(
            name="Target", slug="target", owner_email="bench-owner@example.test"
        )
        organization_create(name="Other", slug="other", owner_email="bench-owner@example.test")
        key, path = target.api_key_secret, "/api/v1/orgs/target/"
        teams_world = None
        if args.mode == "teams":
            from tenants.models import Plan

            # The benchmark measures the server, not the plan's rate limit.
            Plan.objects.update(requests_per_minute=10**7, request_burst=10**7)
            started = time.perf_counter()
            teams_world = _teams_world("bench-owner@example.test")
            print(f"teams world built in {time.perf_counter() - started:.1f} s", flush=True)

        port = _free_port()
        env = dict(os.environ, CADENCE_LOG_LEVEL="WARNING")
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "cadence_site.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
                "--lifespan",
                "off",
            ],
            cwd=ROOT,
            env=env,
        )
        _wait_for(port)
        if teams_world is not None:
            _teams_mode(port, teams_world, args.requests)
            return

        results: dict[tuple[int, int], dict] = {}
        for org_count in (2, args.orgs):
            if org_count > 2:
                print(f"creating {org_count - 2} more organizations...", flush=True)
                for i in range(org_count - 2):
                    organization_create(
                        name=f"Filler {i}",
                        slug=f"filler-{i:05d}",
                        owner_email="bench-owner@example.test",
                    )
            for concurrency in (1, 50):
                results[(org_count, concurrency)] = asyncio.run(
                    _measure(port, path, key, concurrency, args.requests)
                )
                r = results[(org_count, concurrency)]
                print(
                    f"  {org_count:>5} orgs, {concurrency:>2} clients: p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:7.2f} ms  {r['rps']:8.1f} req/s",
                    flush=True,
                )

        print()
        print(f"{'orgs':>6} {'clients':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
        for (org_count, concurrency), r in results.items():
            print(
                f"{org_count:>6} {concurrency:>8} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['rps']:8.1f}"
            )
        p50 = results[(2, 1)]["p50_ms"]
        print()
        print(
            f"p50 at 1 client, 2 orgs: {p50:.2f} ms   target <= 10 ms   {'OK' if p50 <= 10 else 'MISSED'}"
        )
        for concurrency in (1, 50):
            small, large = results[(2, concurrency)], results[(args.orgs, concurrency)]
            print(
                f"{concurrency:>2} clients: p50 {large['p50_ms'] / small['p50_ms']:.2f}x, req/s {large['rps'] / small['rps']:.2f}x at {args.orgs} vs 2 orgs"
            )
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        drop_scratch_database(original, DB_NAME)


if __name__ == "__main__":
    main()
