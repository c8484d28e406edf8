"""API key material: `ck_` plus 43 random characters, shown once, stored as a SHA-256 hash.

The keys carry 256 bits of entropy, so a fast hash is the right one (a slow password hash would
add latency to every request without adding safety). Rows are found by the clear prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "ck_"
PREFIX_LENGTH = 12


def key_generate() -> tuple[str, str, str]:
    """Returns (secret, prefix, hash)."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return secret, secret[:PREFIX_LENGTH], key_hash(secret)


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(key_hash(secret), stored_hash)


def looks_like_key(value: str) -> bool:
    return value.startswith(KEY_PREFIX) and PREFIX_LENGTH < len(value) <= 200
