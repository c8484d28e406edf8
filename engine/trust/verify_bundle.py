#!/usr/bin/env python3
"""Check a Cadence run bundle offline: no Cadence, no Django, no network.

    pip install rfc8785 cryptography
    python verify_bundle.py bundle.json --key 'cadence.example/runs+1a2b3c4d+AaBb...'
    python verify_bundle.py bundle.json --key-file keys.txt --witnessed witness.log

A bundle is what `GET /api/v1/orgs/<slug>/runs/<id>/bundle/` returns. This script recomputes:

1. the definition snapshot's SHA-256 from its RFC 8785 canonical JSON, and that the proof names it;
2. the input and output hashes, and each step record's input, output and record hashes, where
   every record's hash covers the previous one (a hash chain), so a changed, removed, added or
   reordered step breaks it;
3. the proof payload's SHA-256 and its Ed25519 signature, by a key you trust (`--key`, in the
   C2SP signed-note verifier key form `<name>+<key id>+<base64(0x01 || public key)>`; retired
   keys still verify, so pass every key the deployment has published);
4. the proof digest's inclusion in the organization's transparency log (RFC 9162 hashing) under a
   checkpoint (C2SP signed note) signed by a trusted key;
5. with `--witnessed FILE` (checkpoints a witness received, one signed note after another), that
   the log the bundle was proven against extends every witnessed checkpoint of the same origin
   (consistency proofs in the bundle), so a rewritten log is caught even if the whole database
   was replaced.

Exit status 0 only when every check passes; each failure is printed with its reason.
This file imports only the standard library, `rfc8785` and `cryptography`; Cadence's own code
imports its verification functions, never the other way round.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

BUNDLE_FORMAT = "cadence.bundle/v1"
PROOF_VERSION = "cadence.proof/v1"
GENESIS = "0" * 64  # the "previous record" of a run's first step
ED25519 = 0x01  # the C2SP signed-note signature type


class VerifyError(Exception):
    pass


# --- canonical JSON and hashes ---------------------------------------------------------------


_SAFE = 2**53 - 1
_plain_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode


class _NotPlain(Exception):
    """The value needs rfc8785's own writer (see _plain)."""


def _plain_float(number: float) -> float | int:
    """A float as the standard library would write it RFC 8785's way: integral values below 2**53
    as integers (ECMAScript writes 5.0 as 5), others between 1e-4 and 1e16, where Python's repr
    and ECMAScript's shortest round-trip form are the same digits without an exponent."""
    if number.is_integer():
        if -_SAFE <= number <= _SAFE:
            return int(number)
        raise _NotPlain  # Python writes 9007199254740994.0, ECMAScript 9007199254740994
    if 1e-4 <= abs(number) < 1e16:
        return number
    raise _NotPlain


def _plain(value: Any) -> Any:
    """`value` made ready for the standard library's encoder to write its RFC 8785 bytes, or
    _NotPlain: dicts with string keys of the Basic Multilingual Plane (where sorting by code
    point is sorting by UTF-16 code unit), lists, strings, safe integers, floats _plain_float
    takes, booleans and null. String escaping is the same in both (control characters, quote
    and backslash). A value without floats is returned as it is."""
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return value
    if kind is int:
        if -_SAFE <= value <= _SAFE:
            return value
        raise _NotPlain
    if kind is float:
        return _plain_float(value)
    # Containers: their strings, null, booleans and safe integers are taken inline (most of a
    # step record's leaves), without a call each.
    if kind is dict:
        changed = None
        for key, item in value.items():
            # isascii() is a flag check in CPython: max() only for keys beyond ASCII.
            if type(key) is not str or not (key.isascii() or max(key) <= "\uffff"):
                raise _NotPlain
            held = type(item)
            if held is str or item is None or held is bool:
                continue
            if held is int and -_SAFE <= item <= _SAFE:
                continue
            ready = _plain(item)
            if ready is not item or type(ready) is not held:
                if changed is None:
                    changed = dict(value)
                changed[key] = ready
        return value if changed is None else changed
    if kind is list or kind is tuple:
        made = None
        for i, item in enumerate(value):
            held = type(item)
            if held is str or item is None or held is bool:
                continue
            if held is int and -_SAFE <= item <= _SAFE:
                continue
            ready = _plain(item)
            if ready is not item:
                if made is None:
                    made = list(value)
                made[i] = ready
        return value if made is None else made
    raise _NotPlain


def canonical(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes of a JSON value: the `rfc8785` package's, through the standard
    library's C encoder where that gives the same bytes (see _plain), several times faster."""
    try:
        return _plain_dumps(_plain(value)).encode("utf-8")
    except (_NotPlain, UnicodeEncodeError, RecursionError):
        # Numbers ECMAScript writes with an exponent, astral keys, unsafe integers, a lone
        # surrogate: rfc8785 writes them, or says why it refuses.
        return rfc8785.dumps(value)


def digest(value: Any) -> str:
    """Hex SHA-256 of the canonical JSON of `value`."""
    return hashlib.sha256(canonical(value)).hexdigest()


def record_hash(previous: str, record: dict[str, Any]) -> str:
    """A step record's hash: it covers the record and the previous record's hash."""
    return digest({"prev": previous, "record": record})


_HOLE = "\x00cadence.hole:{}\x00"  # a string no step record holds once (checked when used)


def _canonical_with(value: dict[str, Any], known: dict[str, bytes]) -> bytes:
    """canonical(value), where known[key] is canonical(value[key]) already: the value is
    canonicalized with a placeholder string for each of those members, and each placeholder's
    bytes are replaced by the member's. RFC 8785 writes a member's value the same wherever it
    stands, so the bytes are canonical(value)'s; a placeholder found other than exactly once
    (a record holding that very string) falls back to canonicalizing the whole value."""
    holed = dict(value)
    for key in known:
        holed[key] = _HOLE.format(key)
    text = canonical(holed)
    spans = []
    for key, part in known.items():
        hole = canonical(_HOLE.format(key))
        at = text.find(hole)
        if at < 0 or text.find(hole, at + 1) >= 0:
            return canonical(value)
        spans.append((at, at + len(hole), part))
    spans.sort()
    pieces, end = [], 0
    for at, stop, part in spans:
        pieces += (text[end:at], part)
        end = stop
    pieces.append(text[end:])
    return b"".join(pieces)


def step_summary(record: dict[str, Any], previous: str) -> dict[str, Any]:
    """What a proof commits to for one step. Its inputs and outputs are canonicalized once, for
    their own hashes and inside the record's (record_hash's bytes, composed)."""
    inputs, outputs = canonical(record.get("inputs")), canonical(record.get("outputs"))
    if type(record) is dict:
        known = {
            key: part for key, part in (("inputs", inputs), ("outputs", outputs)) if key in record
        }
        # {"prev": ..., "record": ...}: keys in RFC 8785 order, each value canonical.
        hashed = b"".join(
            (b'{"prev":', canonical(previous), b',"record":', _canonical_with(record, known), b"}")
        )
        chained = hashlib.sha256(hashed).hexdigest()
    else:
        chained = record_hash(previous, record)
    return {
        "seq": record.get("seq"),
        "kind": record.get("kind"),
        "name": record.get("name"),
        "outcome": record.get("outcome"),
        "inputs_hash": hashlib.sha256(inputs).hexdigest(),
        "outputs_hash": hashlib.sha256(outputs).hexdigest(),
        "record_hash": chained,
    }


def chain(records: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The proof's step list and the chain head for a run's records, in order."""
    previous = GENESIS
    steps = []
    for record in records:
        summary = step_summary(record, previous)
        steps.append(summary)
        previous = summary["record_hash"]
    return steps, previous


# --- RFC 9162 Merkle tree verification -------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2: the root an inclusion proof leads to (raises if malformed)."""
    if not 0 <= index < size:
        raise VerifyError(f"leaf index {index} is outside a tree of size {size}")
    fn, sn = index, size - 1
    result = leaf
    for sibling in proof:
        if sn == 0:
            raise VerifyError("the inclusion proof is longer than the tree allows")
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerifyError("the inclusion proof is shorter than the tree needs")
    return result


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise VerifyError("the inclusion proof does not lead to the checkpoint's root hash")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """RFC 9162 section 2.1.4.2."""
    if not 0 <= size1 <= size2:
        raise VerifyError(f"a tree of size {size1} cannot precede one of size {size2}")
    if size1 == size2:
        if proof:
            raise VerifyError("a consistency proof between equal sizes must be empty")
        if root1 != root2:
            raise VerifyError("two trees of the same size have different roots")
        return
    if size1 == 0:
        if proof:
            raise VerifyError("a consistency proof from the empty tree must be empty")
        return
    if not proof:
        raise VerifyError("the consistency proof is empty")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # a power of two: the old root is the proof's first node
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for node in path[1:]:
        if sn == 0:
            raise VerifyError("the consistency proof is longer than the trees allow")
        if fn & 1 or fn == sn:
            fr = node_hash(node, fr)
            sr = node_hash(node, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerifyError("the consistency proof is shorter than the trees need")
    if fr != root1:
        raise VerifyError("the consistency proof does not lead to the older root")
    if sr != root2:
        raise VerifyError("the consistency proof does not lead to the newer root")


# --- C2SP signed notes and checkpoints -------------------------------------------------------


def key_id(name: str, public_key: bytes) -> bytes:
    """C2SP: SHA-256(key name || 0x0A || 0x01 || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public_key).digest()[:4]


@dataclass(frozen=True)
class VerifierKey:
    name: str
    id: bytes
    public_key: bytes

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        try:
            name, hex_id, material = text.strip().split("+", 2)
            raw = base64.b64decode(material, validate=True)
            wanted = bytes.fromhex(hex_id)
        except (ValueError, binascii.Error) as exc:
            raise VerifyError(f"not a verifier key: {text.strip()[:80]!r}") from exc
        if len(raw) != 33 or raw[0] != ED25519 or len(wanted) != 4 or not name:
            raise VerifyError(f"not an Ed25519 verifier key: {text.strip()[:80]!r}")
        if key_id(name, raw[1:]) != wanted:
            raise VerifyError(f"the key id of {name!r} does not match its public key")
        return cls(name=name, id=wanted, public_key=raw[1:])

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __str__(self) -> str:
        material = base64.b64encode(bytes([ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.id.hex()}+{material}"


def open_note(note: str, keys: Iterable[VerifierKey]) -> tuple[str, list[VerifierKey]]:
    """The note's text and the trusted keys whose signatures verified; raises unless at least one
    trusted signature verifies and none from a trusted key fails."""
    if len(note) > 1_000_000:
        raise VerifyError("the note is too large")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise VerifyError("the note contains control characters")
    text, sep, signatures = note.rpartition("\n\n")
    if not sep or not signatures.endswith("\n"):
        raise VerifyError("the note has no signature block")
    text += "\n"
    by_id = {(k.name, k.id): k for k in keys}
    verified: list[VerifierKey] = []
    for line in signatures[:-1].split("\n"):
        if not line.startswith("\u2014 "):
            raise VerifyError(f"not a signature line: {line[:80]!r}")
        try:
            name, blob = line[2:].split(" ")
            raw = base64.b64decode(blob, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise VerifyError(f"malformed signature line: {line[:80]!r}") from exc
        key = by_id.get((name, raw[:4]))
        if key is None:
            continue  # C2SP: signatures from unknown keys are ignored
        if not key.verify(text.encode(), raw[4:]):
            raise VerifyError(f"the signature by {name} does not verify")
        verified.append(key)
    if not verified:
        raise VerifyError("the note carries no signature by a trusted key")
    return text, verified


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise VerifyError("a checkpoint needs an origin, a size and a root hash")
        origin, size, root = lines[0], lines[1], lines[2]
        if not size.isdigit() or (len(size) > 1 and size[0] == "0"):
            raise VerifyError(f"bad checkpoint size {size[:30]!r}")
        try:
            root_bytes = base64.b64decode(root, validate=True)
        except binascii.Error as exc:
            raise VerifyError("bad checkpoint root hash") from exc
        if len(root_bytes) != 32 or not origin:
            raise VerifyError("bad checkpoint origin or root hash")
        return cls(origin, int(size), root_bytes, tuple(lines[3:-1]))

    def body(self) -> str:
        lines = [
            self.origin,
            str(self.size),
            base64.b64encode(self.root).decode(),
            *self.extensions,
        ]
        return "\n".join(lines) + "\n"


def open_checkpoint(note: str, keys: Iterable[VerifierKey]) -> Checkpoint:
    text, _ = open_note(note, keys)
    return Checkpoint.parse(text)


def split_notes(text: str) -> list[str]:
    """Signed notes written one after another (a witness file, blank lines between them allowed):
    a note ends with the last signature line of its signature block."""
    notes: list[str] = []
    block, in_signatures = "", False
    for line in text.splitlines(keepends=True):
        if in_signatures and not line.startswith("\u2014 "):
            notes.append(block)
            block, in_signatures = "", False
        if not block and not line.strip():
            continue
        block += line
        if line.startswith("\u2014 ") and "\n\n" in block:
            in_signatures = True
    if block.strip():
        notes.append(block)
    return notes


# --- the bundle ------------------------------------------------------------------------------


@dataclass
class Report:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def passed(self, name: str, detail: str = "") -> None:
        self.checks.append((name, True, detail))

    def failed(self, name: str, detail: str) -> None:
        self.checks.append((name, False, detail))

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)

    @property
    def failures(self) -> list[str]:
        return [f"{name}: {detail}" for name, ok, detail in self.checks if not ok]


def _check(report: Report, name: str, fn) -> Any:
    try:
        result = fn()
    except (VerifyError, KeyError, TypeError, ValueError) as exc:
        report.failed(name, str(exc) if isinstance(exc, VerifyError) else f"malformed: {exc!r}")
        return None
    report.passed(name)
    return result


def verify_proof(proof: dict[str, Any], keys: Sequence[VerifierKey]) -> None:
    """The payload's SHA-256 is the proof's digest, signed by a trusted key."""
    if digest(proof["payload"]) != proof["digest"]:
        raise VerifyError("the proof payload does not hash to the proof's digest")
    wanted = bytes.fromhex(proof["key_id"])
    signature = base64.b64decode(proof["signature"], validate=True)
    for key in keys:
        if key.id == wanted and key.name == proof["key_name"]:
            if key.verify(bytes.fromhex(proof["digest"]), signature):
                return
            raise VerifyError(f"the proof's signature by {key.name} does not verify")
    raise VerifyError(f"the proof is signed by key {proof['key_id']}, which is not trusted")


def _hexes(values: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def verify_bundle(
    bundle: dict[str, Any],
    keys: Sequence[VerifierKey],
    witnessed: Sequence[str] = (),
) -> Report:
    report = Report()
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        report.failed("format", f"not a {BUNDLE_FORMAT} bundle")
        return report
    proof = bundle.get("proof") or {}
    payload = proof.get("payload") or {}

    def snapshot():
        snap = bundle["snapshot"]
        computed = digest(snap["definition"])
        if computed != snap["hash"]:
            raise VerifyError(f"the definition hashes to {computed}, not {snap['hash']}")
        if payload.get("snapshot") != computed:
            raise VerifyError("the proof names another definition snapshot")

    def io():
        if digest(bundle["input"]) != payload["input_hash"]:
            raise VerifyError("the run's input does not match the proof's input hash")
        if digest(bundle["output"]) != payload["output_hash"]:
            raise VerifyError("the run's output does not match the proof's output hash")

    def steps():
        computed, head = chain(bundle["steps"])
        committed = payload["steps"]
        if len(computed) != len(committed):
            raise VerifyError(
                f"the bundle has {len(computed)} step records, the proof commits to {len(committed)}"
            )
        for ours, theirs in zip(computed, committed, strict=True):
            if ours != theirs:
                changed = sorted(k for k in ours if ours[k] != theirs.get(k))
                raise VerifyError(
                    f"step {theirs.get('seq')} differs from the proof: {', '.join(changed)}"
                )
        if head != payload["chain_head"]:
            raise VerifyError("the step records' hash chain does not end at the proof's chain head")

    def identity():
        run = bundle.get("run") or {}
        if payload.get("version") != PROOF_VERSION:
            raise VerifyError(f"unknown proof version {payload.get('version')!r}")
        if (
            run.get("id") != payload["run_id"]
            or bundle.get("organization") != payload["organization"]
        ):
            raise VerifyError("the proof is for another run or organization")

    _check(report, "identity", identity)
    _check(report, "snapshot", snapshot)
    _check(report, "input and output", io)
    _check(report, "step records", steps)
    _check(report, "signature", lambda: verify_proof(proof, keys))

    log = bundle.get("log")
    if not log:
        report.failed("transparency log", "the bundle carries no log inclusion (not appended yet?)")
        return report

    def inclusion() -> Checkpoint:
        checkpoint = open_checkpoint(log["checkpoint"], keys)
        if checkpoint.origin != log["origin"]:
            raise VerifyError("the checkpoint is for another log")
        if checkpoint.size != log["tree_size"]:
            raise VerifyError("the inclusion proof is for another tree size than the checkpoint's")
        leaf = leaf_hash(bytes.fromhex(proof["digest"]))
        verify_inclusion(
            log["index"], checkpoint.size, leaf, _hexes(log["inclusion"]), checkpoint.root
        )
        return checkpoint

    checkpoint = _check(report, "transparency log", inclusion)
    if checkpoint is None or not witnessed:
        return report
    consistency = {int(item["from"]): item for item in log.get("consistency", [])}
    for note in witnessed:
        try:
            seen = open_checkpoint(note, keys)
        except VerifyError as exc:
            report.failed("witness", f"a witnessed checkpoint does not verify: {exc}")
            continue
        if seen.origin != checkpoint.origin:
            continue
        name = f"witness (size {seen.size})"
        if seen.size > checkpoint.size:
            report.passed(name, "witnessed after this bundle was made; not comparable")
            continue

        def consistent(seen=seen):
            item = consistency.get(seen.size)
            if item is None and seen.size != checkpoint.size:
                raise VerifyError(f"the bundle has no consistency proof from size {seen.size}")
            path = _hexes(item["proof"]) if item else []
            verify_consistency(seen.size, checkpoint.size, path, seen.root, checkpoint.root)

        _check(report, name, consistent)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify a Cadence run bundle offline.")
    parser.add_argument("bundle", help="the bundle JSON file (- for standard input)")
    parser.add_argument("--key", action="append", default=[], help="a trusted verifier key")
    parser.add_argument("--key-file", action="append", default=[], help="verifier keys, one a line")
    parser.add_argument("--witnessed", help="checkpoints a witness received (signed notes)")
    args = parser.parse_args(argv)
    try:
        texts = list(args.key)
        for path in args.key_file:
            with open(path, encoding="utf-8") as fh:
                texts += [line for line in fh.read().splitlines() if line.strip()]
        keys = [VerifierKey.parse(text) for text in texts]
        if not keys:
            raise VerifyError("no trusted key given (--key or --key-file)")
        if args.bundle == "-":
            bundle = json.load(sys.stdin)
        else:
            with open(args.bundle, encoding="utf-8") as fh:
                bundle = json.load(fh)
        witnessed: list[str] = []
        if args.witnessed:
            with open(args.witnessed, encoding="utf-8") as fh:
                witnessed = split_notes(fh.read())
    except (OSError, ValueError, VerifyError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    report = verify_bundle(bundle, keys, witnessed)
    for name, ok, detail in report.checks:
        sys.stdout.write(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}\n")
    sys.stdout.write("verified\n" if report.ok else "NOT VERIFIED\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
