"""The hostile corpus: packages every check in plugins.archive must refuse (shared with the benchmark)."""

from __future__ import annotations

import io
import json
import stat
import struct
import zipfile

from plugins.archive import pack

GOOD_MANIFEST = {
    "schema_version": 1,
    "id": "com.evil.pkg",
    "name": "Evil",
    "version": "1.0.0",
    "kind": "tenant",
}


def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]], method=zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return out.getvalue()


def _with_manifest(*entries) -> bytes:
    return _zip([("cadence-plugin.json", json.dumps(GOOD_MANIFEST).encode()), *entries])


def zip_slip() -> bytes:
    return _with_manifest(("../../etc/cron.d/x", b"boom"))


def absolute_path() -> bytes:
    return _with_manifest(("/etc/passwd", b"root"))


def backslash() -> bytes:
    return _with_manifest(("..\\..\\win.ini", b"x"))


def drive_letter() -> bytes:
    return _with_manifest(("C:/Windows/x", b"x"))


def symlink() -> bytes:
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return _with_manifest((info, b"/etc/passwd"))


def duplicate() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("cadence-plugin.json", json.dumps(GOOD_MANIFEST))
        archive.writestr("a.txt", b"1")
        archive.writestr("A.txt", b"2")
    return out.getvalue()


def encrypted() -> bytes:
    raw = bytearray(_with_manifest(("secret.txt", b"hidden")))
    # Set the "encrypted" flag bit on every local and central header.
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (start := raw.find(signature, start)) != -1:
            (flags,) = struct.unpack_from("<H", raw, start + flag_at)
            struct.pack_into("<H", raw, start + flag_at, flags | 0x1)
            start += 4
    return bytes(raw)


def overlapping() -> bytes:
    raw = bytearray(_with_manifest(("b.txt", b"B" * 100), ("c.txt", b"C" * 100)))
    # Point the last central entry at the previous member's local header.
    centrals = []
    start = 0
    while (start := raw.find(b"PK\x01\x02", start)) != -1:
        centrals.append(start)
        start += 4
    (previous,) = struct.unpack_from("<L", raw, centrals[-2] + 42)
    struct.pack_into("<L", raw, centrals[-1] + 42, previous)
    return bytes(raw)


def many_entries(count: int = 10_000) -> bytes:
    return _zip(
        [("cadence-plugin.json", json.dumps(GOOD_MANIFEST).encode())]
        + [(f"f/{i}.txt", b"") for i in range(count)],
        method=zipfile.ZIP_STORED,
    )


def ratio_bomb() -> bytes:
    return _with_manifest(("zeros.txt", b"\0" * (20 * 1024 * 1024)))


def total_size_bomb() -> bytes:
    # Each member under the ratio cap (a 16 KiB random block repeated: ~60x), together above the
    # total cap.
    import random

    chunk = random.Random(7).randbytes(16 * 1024) * 64
    return _with_manifest(*[(f"part{i}.txt", chunk) for i in range(40)])


def not_a_zip() -> bytes:
    return b"this is not a zip file at all"


def no_manifest() -> bytes:
    return pack({"readme.txt": b"hello"})


def python_in_tenant() -> bytes:
    return pack(
        {"cadence-plugin.json": json.dumps(GOOD_MANIFEST).encode(), "evil.py": b"import os"}
    )


def deep_manifest() -> bytes:
    deep: dict = {}
    node = deep
    for _ in range(200):
        node["a"] = {}
        node = node["a"]
    return pack(
        {
            "cadence-plugin.json": json.dumps(
                GOOD_MANIFEST | {"settings": {"type": "object", "x": deep}}
            ).encode()
        }
    )


CORPUS = {
    "zip_slip": (zip_slip, "bad_path"),
    "absolute_path": (absolute_path, "bad_path"),
    "backslash": (backslash, "bad_path"),
    "drive_letter": (drive_letter, "bad_path"),
    "symlink": (symlink, "symlink"),
    "duplicate": (duplicate, "duplicate_entry"),
    "encrypted": (encrypted, "encrypted_entry"),
    "overlapping": (overlapping, "overlapping_entries"),
    "many_entries": (many_entries, "too_many_entries"),
    "ratio_bomb": (ratio_bomb, "compression_ratio"),
    "total_size_bomb": (total_size_bomb, "too_large_uncompressed"),
    "not_a_zip": (not_a_zip, "bad_zip"),
    "no_manifest": (no_manifest, "missing_manifest"),
    "python_in_tenant": (python_in_tenant, "invalid_manifest"),
    "deep_manifest": (deep_manifest, "bad_manifest"),
}
