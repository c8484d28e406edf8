"""Reading an untrusted plugin ZIP without trusting it.

Order matters (FIELD-NOTES, "Plugin ZIPs"): the size is capped before anything parses the bytes;
the central directory is checked entry by entry (names, types, flags, overlaps) before any member
is decompressed; members are then streamed through `ZipFile.open` in chunks, counting what they
expand to against total-size and ratio caps, so a bomb stops at the cap instead of in the
allocator. Nothing is ever extracted to disk: the only members kept in memory are the manifest
and the small text files a plugin declares (code sources, at most `MAX_KEPT_BYTES` together).

Plain Python (no Django): the CLI packs and checks with the same rules.
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
import struct
import unicodedata
import zipfile
from dataclasses import dataclass, field
from typing import Any

from plugins.manifest import MANIFEST_NAME, Issue, manifest_issues

MAX_PACKAGE_BYTES = 8 * 1024 * 1024
MAX_ENTRIES = 1000
MAX_TOTAL_BYTES = 32 * 1024 * 1024
MAX_RATIO = 100  # per member and overall; text compresses ~10x, bombs 1000x
MAX_MANIFEST_BYTES = 256 * 1024
MAX_KEPT_BYTES = 2 * 1024 * 1024
MAX_NAME_CHARS = 255
CHUNK = 64 * 1024
MAX_MANIFEST_DEPTH = 32
# Members whose presence makes a tenant package carry code a process could load or run.
NATIVE_OR_PYTHON = (".py", ".pyc", ".pyo", ".pyd", ".so", ".dylib", ".dll", ".whl", ".egg", ".pth")
ALLOWED_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")


class PackageError(Exception):
    """A package refused before it is stored; `issues` lists every reason found."""

    def __init__(self, message: str, code: str, issues: list[Issue] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.issues = issues or []


@dataclass
class Package:
    manifest: dict[str, Any]
    sha256: str
    size: int
    names: list[str]
    files: dict[str, bytes] = field(default_factory=dict)  # kept members (code sources)

    @property
    def plugin_id(self) -> str:
        return self.manifest["id"]

    @property
    def version(self) -> str:
        return self.manifest["version"]


def _name_problem(name: str) -> str | None:
    if not name or len(name) > MAX_NAME_CHARS:
        return "an empty or overlong name"
    if "\x00" in name or any(unicodedata.category(c) == "Cc" for c in name):
        return "a control character in the name"
    if "\\" in name:
        return "a backslash in the path"
    if name.startswith("/"):
        return "an absolute path"
    if len(name) >= 2 and name[1] == ":" and name[0].isalpha():
        return "a drive letter"
    if any(part in ("..", ".") for part in name.rstrip("/").split("/")):
        return "a '..' or '.' path component"
    if "//" in name:
        return "an empty path component"
    return None


def _entry_issues(archive: zipfile.ZipFile, raw: bytes) -> list[Issue]:
    issues: list[Issue] = []
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        return [
            Issue(
                "",
                f"The package has {len(infos)} entries; the limit is {MAX_ENTRIES}.",
                "too_many_entries",
            )
        ]
    seen: set[str] = set()
    spans: list[tuple[int, int, str]] = []
    for info in infos:
        name = info.filename
        where = f"/{name}" if name else ""
        problem = _name_problem(name)
        if problem:
            issues.append(Issue(where, f"Refused entry {name!r}: {problem}.", "bad_path"))
            continue
        folded = unicodedata.normalize("NFC", name).casefold()
        if folded in seen:
            issues.append(Issue(where, f"The entry {name!r} appears twice.", "duplicate_entry"))
        seen.add(folded)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            issues.append(Issue(where, f"The entry {name!r} is a symbolic link.", "symlink"))
        elif mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) and stat.S_IFMT(mode):
            issues.append(
                Issue(where, f"The entry {name!r} is not a regular file.", "special_file")
            )
        if info.flag_bits & 0x1:
            issues.append(Issue(where, f"The entry {name!r} is encrypted.", "encrypted_entry"))
        if info.compress_type not in ALLOWED_METHODS:
            issues.append(
                Issue(
                    where,
                    f"The entry {name!r} uses an unsupported compression method.",
                    "bad_compression",
                )
            )
        offset = info.header_offset
        if offset + _LOCAL_HEADER.size > len(raw):
            issues.append(
                Issue(where, f"The entry {name!r} points outside the file.", "bad_offset")
            )
            continue
        fields = _LOCAL_HEADER.unpack_from(raw, offset)
        if fields[0] != b"PK\x03\x04":
            issues.append(Issue(where, f"The entry {name!r} has no local header.", "bad_offset"))
            continue
        end = offset + _LOCAL_HEADER.size + fields[9] + fields[10] + info.compress_size
        spans.append((offset, end, name))
    spans.sort()
    reach, reach_name = 0, ""
    for start, end, name in spans:
        if start < reach:
            issues.append(
                Issue(
                    f"/{name}",
                    f"The entries {reach_name!r} and {name!r} overlap.",
                    "overlapping_entries",
                )
            )
        if end > reach:
            reach, reach_name = end, name
    return issues


def _stream_members(archive: zipfile.ZipFile, keep: set[str]) -> dict[str, bytes]:
    """Decompress every member in chunks under the caps; return the bytes of `keep` only."""
    kept: dict[str, bytes] = {}
    total = kept_bytes = 0
    for info in archive.infolist():
        if info.is_dir():
            continue
        member_bytes = 0
        buffer = io.BytesIO() if info.filename in keep else None
        limit = max(info.compress_size, 1) * MAX_RATIO
        with archive.open(info) as stream:
            while chunk := stream.read(CHUNK):
                member_bytes += len(chunk)
                total += len(chunk)
                if total > MAX_TOTAL_BYTES:
                    raise PackageError(
                        f"The package expands beyond {MAX_TOTAL_BYTES} bytes.",
                        "too_large_uncompressed",
                    )
                if member_bytes > limit and member_bytes > CHUNK:
                    raise PackageError(
                        f"The entry {info.filename!r} expands more than {MAX_RATIO} times its compressed size.",
                        "compression_ratio",
                    )
                if buffer is not None:
                    kept_bytes += len(chunk)
                    if kept_bytes > MAX_KEPT_BYTES:
                        raise PackageError(
                            "The declared files are too large.", "too_large_uncompressed"
                        )
                    buffer.write(chunk)
        if buffer is not None:
            kept[info.filename] = buffer.getvalue()
    return kept


def _depth(value: Any) -> int:
    """Nesting depth without recursion (a deep manifest must not exhaust the stack later)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_MANIFEST_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _declared_files(manifest: dict) -> set[str]:
    provides = manifest.get("provides", {}) if isinstance(manifest, dict) else {}
    if not isinstance(provides, dict):
        return set()
    return {
        item["source"]
        for section in ("tools", "notes")
        for item in provides.get(section, []) or []
        if isinstance(item, dict) and isinstance(item.get("source"), str)
    }


def inspect_package(raw: bytes, *, expected_kind: str | None = None) -> Package:
    """Check a package completely; raise PackageError listing every problem found."""
    if len(raw) > MAX_PACKAGE_BYTES:
        raise PackageError(f"The package exceeds {MAX_PACKAGE_BYTES} bytes.", "too_large")
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        raise PackageError("The package is not a valid ZIP file.", "bad_zip") from None
    with archive:
        issues = _entry_issues(archive, raw)
        if issues:
            raise PackageError(issues[0].message, issues[0].code, issues)
        names = [info.filename for info in archive.infolist()]
        if MANIFEST_NAME not in names:
            raise PackageError(
                f"The package has no {MANIFEST_NAME} at its root.", "missing_manifest"
            )
        manifest_info = archive.getinfo(MANIFEST_NAME)
        if manifest_info.file_size > MAX_MANIFEST_BYTES:
            raise PackageError(
                f"{MANIFEST_NAME} exceeds {MAX_MANIFEST_BYTES} bytes.", "manifest_too_large"
            )
        try:
            kept = _stream_members(archive, {MANIFEST_NAME})
            manifest = json.loads(kept[MANIFEST_NAME].decode("utf-8"))
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError) as exc:
            raise PackageError(f"The package is damaged: {exc}.", "bad_zip") from None
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise PackageError(
                f"{MANIFEST_NAME} is not valid JSON: {exc}.", "bad_manifest"
            ) from None
        if _depth(manifest) > MAX_MANIFEST_DEPTH:
            raise PackageError(
                f"{MANIFEST_NAME} nests deeper than {MAX_MANIFEST_DEPTH} levels.", "bad_manifest"
            )
        problems = manifest_issues(manifest, set(names))
        if (
            expected_kind
            and isinstance(manifest, dict)
            and manifest.get("kind") not in (None, expected_kind)
        ):
            problems.append(
                Issue("/kind", f"Only {expected_kind} plugins can be uploaded here.", "wrong_kind")
            )
        if isinstance(manifest, dict) and manifest.get("kind") == "tenant":
            declared = _declared_files(manifest)
            for name in names:
                if name.lower().endswith(NATIVE_OR_PYTHON) and name not in declared:
                    problems.append(
                        Issue(
                            f"/{name}",
                            f"Tenant plugins are declarative: {name!r} is Python or native code "
                            "(only sandboxed code/ sources a manifest declares are allowed).",
                            "code_not_allowed",
                        )
                    )
        if problems:
            raise PackageError(
                f"The manifest is invalid: {problems[0].path}: {problems[0].message}",
                "invalid_manifest",
                problems,
            )
        declared = _declared_files(manifest)
        try:
            files = _stream_members(archive, declared)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError) as exc:
            raise PackageError(f"The package is damaged: {exc}.", "bad_zip") from None
    return Package(
        manifest=manifest,
        sha256=hashlib.sha256(raw).hexdigest(),
        size=len(raw),
        names=names,
        files=files,
    )


def pack(files: dict[str, bytes]) -> bytes:
    """A deterministic ZIP of `files` (sorted, fixed timestamps): the same content packs to the
    same bytes, so a re-upload of an unchanged plugin is byte-identical."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            archive.writestr(info, files[name])
    return out.getvalue()
