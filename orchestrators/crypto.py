"""LLM API keys at rest: Fernet, rotated through MultiFernet.

CADENCE_ENCRYPTION_KEY holds one or more Fernet keys, comma-separated; the first encrypts, all
decrypt, so a new key is put first and old ciphertexts are re-encrypted with `rotate`. Without it
(one-machine development) a key is derived from SECRET_KEY, itself never in the code, with a
warning: production sets its own.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

logger = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def _fernet(raw_keys: str, secret_key: str) -> MultiFernet:
    keys = [k.strip() for k in raw_keys.split(",") if k.strip()]
    if not keys:
        logger.warning(
            "CADENCE_ENCRYPTION_KEY is not set; deriving the LLM key encryption key from SECRET_KEY"
        )
        derived = base64.urlsafe_b64encode(
            hashlib.sha256(b"cadence-llm-keys:" + secret_key.encode()).digest()
        )
        keys = [derived.decode()]
    return MultiFernet([Fernet(k) for k in keys])


def _current() -> MultiFernet:
    return _fernet(settings.CADENCE_ENCRYPTION_KEY, settings.SECRET_KEY)


def encrypt(plaintext: str) -> str:
    return _current().encrypt(plaintext.encode()).decode() if plaintext else ""


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError(
            "the stored API key cannot be decrypted with the configured keys"
        ) from None


def rotate(token: str) -> str:
    return _current().rotate(token.encode()).decode() if token else ""


def mask(plaintext: str) -> str:
    """`sk-…9f2c`: enough to recognise a key, never enough to use it."""
    if not plaintext:
        return ""
    head = plaintext[:3] if len(plaintext) > 12 else ""
    return f"{head}…{plaintext[-4:]}" if len(plaintext) > 8 else "…"
