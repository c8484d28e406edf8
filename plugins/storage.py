"""Where packages live: the default django-storages backend, and a local cache keyed by SHA-256.

Keys: `system/<id>/<version>.zip` for the system catalog, `orgs/<schema>/<id>/<version>.zip` for
an organization's. The backend is the project's default storage: local files unless
CADENCE_S3_ENABLED, then S3/MinIO. Any process that needs a package's bytes (a worker building an
orchestrator, another ASGI process) reads them through `package_path`, which fills the local cache
on demand and checks the hash of what it downloaded: a cache file's name is its content's hash,
so a cached package is never stale and never needs invalidating.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages

from cadence_site.errors import ApplicationError

CACHE_DIR_NAME = "plugin-cache"


def storage_key(*, plugin_id: str, version: str, schema_name: str | None) -> str:
    """`schema_name=None` is the system catalog. Ids and versions are validated before they get here."""
    if schema_name is None:
        return f"system/{plugin_id}/{version}.zip"
    return f"orgs/{schema_name}/{plugin_id}/{version}.zip"


def _storage():
    return storages["default"]


def package_store(*, key: str, raw: bytes) -> None:
    """Write a package under exactly `key` (a key already there is an error, never a rename)."""
    storage = _storage()
    if storage.exists(key):
        raise ApplicationError(
            "A package is already stored under this key.", "storage_conflict", status=409
        )
    saved = storage.save(key, ContentFile(raw))
    if saved != key:  # a backend that renames instead of refusing: undo, and say so
        storage.delete(saved)
        raise ApplicationError(
            "A package is already stored under this key.", "storage_conflict", status=409
        )


def package_delete(*, key: str) -> None:
    storage = _storage()
    if storage.exists(key):
        storage.delete(key)


def cache_dir() -> Path:
    path = Path(
        getattr(settings, "CADENCE_PLUGIN_CACHE_DIR", "") or settings.VAR_DIR / CACHE_DIR_NAME
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_path(*, key: str, sha256: str) -> Path:
    """A local file holding the package's bytes, downloaded into the cache if this process lacks it."""
    target = cache_dir() / f"{sha256}.zip"
    if target.exists():
        return target
    digest = hashlib.sha256()
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".fill-", suffix=".zip")
    try:
        with os.fdopen(fd, "wb") as out, _storage().open(key, "rb") as source:
            for chunk in iter(lambda: source.read(64 * 1024), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise ApplicationError(
                "The stored package does not match its recorded hash.",
                "package_corrupt",
                status=500,
            )
        os.replace(temp, target)  # atomic: concurrent fillers write the same bytes
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return target


def package_bytes(*, key: str, sha256: str) -> bytes:
    return package_path(key=key, sha256=sha256).read_bytes()


def cache_fill(*, sha256: str, raw: bytes) -> Path:
    """Put bytes this process already holds (just uploaded) into the cache."""
    target = cache_dir() / f"{sha256}.zip"
    if not target.exists():
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".fill-", suffix=".zip")
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
        os.replace(temp, target)
    return target
