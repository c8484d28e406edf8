"""The deployment's Ed25519 signing keys: a current key that signs, older keys that still verify.

Keys are C2SP signed-note keys (name, 4-byte key id, Ed25519), written in the form Go's
`sumdb/note` uses: `PRIVATE+KEY+<name>+<key id>+<base64(0x01 || seed)>` for a signer and
`<name>+<key id>+<base64(0x01 || public key)>` for a verifier, so any note tooling can check
Cadence's checkpoints.

Where the keys come from, first match wins:
- `CADENCE_SIGNING_KEYS`: signer keys separated by commas, the first one current;
- otherwise the file `<CADENCE_VAR_DIR>/signing_keys` (mode 0600, one signer key a line, the first
  current), created with a fresh key on first use; `manage.py signing_key_rotate` puts a new key
  first and keeps the others, so proofs signed before a rotation still verify.
`CADENCE_SIGNING_RETIRED_KEYS` lists verifier keys whose private halves were destroyed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from engine.trust.verify_bundle import ED25519, VerifierKey, key_id

_PREFIX = "PRIVATE+KEY+"


class SigningKeyError(ValueError):
    pass


@dataclass(frozen=True)
class Signer:
    name: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> Signer:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def parse(cls, text: str) -> Signer:
        text = text.strip()
        if not text.startswith(_PREFIX):
            raise SigningKeyError("a signer key starts with PRIVATE+KEY+")
        try:
            name, hex_id, material = text[len(_PREFIX) :].split("+", 2)
            raw = base64.b64decode(material, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise SigningKeyError("malformed signer key") from exc
        if len(raw) != 33 or raw[0] != ED25519:
            raise SigningKeyError("not an Ed25519 signer key")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.key_id.hex() != hex_id.lower():
            raise SigningKeyError(f"the key id of {name!r} does not match its key")
        return signer

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @functools.cached_property
    def key_id(self) -> bytes:
        # Once per signer (every proof names it: deriving the public key and hashing it again
        # for each was ~1% of a streamed /v1 turn's CPU). The instance's __dict__, written by
        # cached_property itself, is untouched by frozen=True.
        return key_id(self.name, self.public_key)

    @property
    def verifier(self) -> VerifierKey:
        return VerifierKey(self.name, self.key_id, self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def sign_note(self, text: str) -> str:
        """A C2SP signed note: the text (ending in a newline), a blank line, our signature line."""
        if not text.endswith("\n"):
            raise ValueError("a note's text ends with a newline")
        blob = base64.b64encode(self.key_id + self.sign(text.encode())).decode()
        return f"{text}\n\u2014 {self.name} {blob}\n"

    def serialize(self) -> str:
        seed = self.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        material = base64.b64encode(bytes([ED25519]) + seed).decode()
        return f"{_PREFIX}{self.name}+{self.key_id.hex()}+{material}"


@dataclass(frozen=True)
class Keyring:
    current: Signer
    signers: tuple[Signer, ...]
    retired: tuple[VerifierKey, ...]

    @property
    def verifiers(self) -> list[VerifierKey]:
        return [s.verifier for s in self.signers] + list(self.retired)


def key_name() -> str:
    return (
        getattr(settings, "CADENCE_SIGNING_KEY_NAME", "")
        or f"{settings.CADENCE_BASE_DOMAIN}/cadence"
    )


def keys_path() -> Path:
    return Path(settings.VAR_DIR) / "signing_keys"


_lock = threading.Lock()
_cache: dict[tuple, Keyring] = {}


def _read_file(path: Path) -> list[str]:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: read theirs
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(Signer.generate(key_name()).serialize() + "\n")
    return [line for line in path.read_text().splitlines() if line.strip()]


def keyring() -> Keyring:
    configured = getattr(settings, "CADENCE_SIGNING_KEYS", "")
    retired = getattr(settings, "CADENCE_SIGNING_RETIRED_KEYS", "")
    path = keys_path()
    stamp = (configured, retired, str(path), path.stat().st_mtime_ns if path.exists() else 0)
    with _lock:
        if stamp in _cache:
            return _cache[stamp]
        texts = [t for t in configured.split(",") if t.strip()] if configured else _read_file(path)
        signers = tuple(Signer.parse(t) for t in texts)
        if not signers:
            raise SigningKeyError("no signing key configured")
        ring = Keyring(
            current=signers[0],
            signers=signers,
            retired=tuple(VerifierKey.parse(t) for t in retired.split(",") if t.strip()),
        )
        _cache.clear()
        _cache[(*stamp[:3], path.stat().st_mtime_ns if path.exists() else 0)] = ring
        return ring


def rotate() -> Signer:
    """A new current key first in the key file; the old ones stay (they still verify)."""
    if getattr(settings, "CADENCE_SIGNING_KEYS", ""):
        raise SigningKeyError(
            "keys come from CADENCE_SIGNING_KEYS: put a new key first there instead"
        )
    path = keys_path()
    existing = _read_file(path)
    signer = Signer.generate(key_name())
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join([signer.serialize(), *existing]) + "\n")
    os.replace(tmp, path)
    with _lock:
        _cache.clear()
    return signer
