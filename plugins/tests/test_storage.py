"""Package storage on disk and on a real S3-compatible server (moto's server process)."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from cadence_site.errors import ApplicationError
from plugins import storage
from plugins.tests import hostile
from plugins.tests.conftest import package

pytestmark = pytest.mark.django_db

BUCKET = "cadence-plugins"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto_server():
    port = _free_port()
    binary = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("moto_server did not start")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def s3(moto_server, settings):
    import boto3

    options = {
        "bucket_name": BUCKET,
        "endpoint_url": moto_server,
        "access_key": "testing",
        "secret_key": "testing",
        "region_name": "us-east-1",
        "file_overwrite": False,
        "default_acl": None,
    }
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options},
    }
    client = boto3.client(
        "s3",
        endpoint_url=moto_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def keys(client) -> list[str]:
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def upload(client, raw):
    return client.post(
        "/api/v1/orgs/alpha/plugins/",
        {"package": SimpleUploadedFile("p.zip", raw)},
        format="multipart",
    )


def test_uploads_land_in_s3_under_the_org_key_and_any_process_fills_its_cache(
    world, as_key, s3, settings
):
    admin = as_key(world.alpha.keys["admin"])
    raw = package()
    assert upload(admin, raw).status_code == 201
    assert keys(s3) == ["orgs/org_alpha/com.acme.weather/1.0.0.zip"]
    sha = hashlib.sha256(raw).hexdigest()

    # Another process: an empty cache, filled from S3 on demand and checked against the hash.
    shutil.rmtree(settings.CADENCE_PLUGIN_CACHE_DIR)
    path = storage.package_path(key="orgs/org_alpha/com.acme.weather/1.0.0.zip", sha256=sha)
    assert path.name == f"{sha}.zip" and path.read_bytes() == raw


def test_a_refused_upload_leaves_the_bucket_empty(world, as_key, s3):
    admin = as_key(world.alpha.keys["admin"])
    assert upload(admin, hostile.zip_slip()).status_code == 400
    assert upload(admin, package()).status_code == 201
    assert upload(admin, package() + b"").status_code == 200  # identical: nothing rewritten
    assert keys(s3) == ["orgs/org_alpha/com.acme.weather/1.0.0.zip"]


def test_a_tampered_object_is_refused_when_the_cache_fills(s3, settings):
    raw = package()
    sha = hashlib.sha256(raw).hexdigest()
    s3.put_object(Bucket=BUCKET, Key="system/x/1.0.0.zip", Body=b"tampered")
    with pytest.raises(ApplicationError) as caught:
        storage.package_path(key="system/x/1.0.0.zip", sha256=sha)
    assert caught.value.code == "package_corrupt"
    assert list(Path(settings.CADENCE_PLUGIN_CACHE_DIR).iterdir()) == []


def test_keys_per_catalog():
    assert (
        storage.storage_key(plugin_id="a.b", version="1.0.0", schema_name=None)
        == "system/a.b/1.0.0.zip"
    )
    assert (
        storage.storage_key(plugin_id="a.b", version="1.0.0", schema_name="org_x")
        == "orgs/org_x/a.b/1.0.0.zip"
    )


def test_a_key_already_taken_is_never_overwritten(plugin_storage):
    storage.package_store(key="system/a.b/1.0.0.zip", raw=b"one")
    with pytest.raises(ApplicationError) as caught:
        storage.package_store(key="system/a.b/1.0.0.zip", raw=b"two")
    assert caught.value.code == "storage_conflict"
    assert (plugin_storage / "media/system/a.b/1.0.0.zip").read_bytes() == b"one"
