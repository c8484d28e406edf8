"""The OpenID Connect relying party: discovery, the authorization request, the code exchange and
the ID token's checks. Protocol pieces come from Authlib (PKCE, request encoding, the ID token's
claim rules) and joserfc (JWS/JWK); every request to the provider goes through the one outbound
client (cadence_site/outbound.py), so the egress policy applies to providers as to LLMs.

No discovery or JWKS cache: a sign-in fetches them (two small GETs), so a provider that rotates
its keys is followed at once and a cache cannot be poisoned across organizations.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwk import KeySet

from cadence_site.errors import ApplicationError
from cadence_site.outbound import EgressDenied, async_client

logger = logging.getLogger(__name__)

# Asymmetric only: an HMAC "signature" keyed with the client secret, or "none", is refused.
ID_TOKEN_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
MAX_DOCUMENT_BYTES = 256 * 1024
CLOCK_LEEWAY_SECONDS = 60
TIMEOUT_SECONDS = 10.0


class SsoError(ApplicationError):
    """A sign-in that cannot go on; its message is shown on the page the browser lands on."""


def provider_failed(message: str) -> SsoError:
    return SsoError(message, "sso_provider_error", status=502)


def token_refused(message: str) -> SsoError:
    return SsoError(message, "sso_token_invalid", status=401)


@dataclass(frozen=True)
class AuthorizationRequest:
    url: str
    state: str
    nonce: str
    code_verifier: str


@dataclass(frozen=True)
class Assertion:
    """What the provider vouched for, once every check passed."""

    issuer: str
    subject: str
    email: str
    email_verified: bool
    claims: dict[str, Any]


async def _json(response: httpx.Response, what: str) -> dict:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_DOCUMENT_BYTES:
            raise provider_failed(f"The provider's {what} is larger than 256 KiB.")
    if response.status_code != 200:
        detail = ""
        with contextlib.suppress(ValueError):  # an error body that is not JSON names nothing
            error = json.loads(body)
            if isinstance(error, dict) and isinstance(error.get("error"), str):
                detail = f" ({error['error'][:80]})"
        raise provider_failed(
            f"The provider answered {response.status_code} to the {what} request{detail}."
        )
    try:
        document = json.loads(body)
    except ValueError:
        raise provider_failed(f"The provider's {what} is not JSON.") from None
    if not isinstance(document, dict):
        raise provider_failed(f"The provider's {what} is not a JSON object.")
    return document


async def _get(client: httpx.AsyncClient, url: str, what: str, **kwargs) -> dict:
    async with client.stream("GET", url, **kwargs) as response:
        return await _json(response, what)


async def _call(coro_fn, *args, **kwargs):
    try:
        return await coro_fn(*args, **kwargs)
    except EgressDenied as exc:
        raise SsoError(
            f"The provider cannot be reached under this server's egress policy: {exc.message}",
            "sso_provider_unreachable",
            status=502,
        ) from None
    except httpx.HTTPError as exc:
        raise SsoError(
            f"The provider could not be reached ({type(exc).__name__}).",
            "sso_provider_unreachable",
            status=502,
        ) from None


def _endpoint(document: dict, name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise provider_failed(f"The provider's discovery document has no {name}.")
    return value


async def _discover(client: httpx.AsyncClient, issuer: str) -> dict:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    document = await _get(client, url, "discovery document")
    # OpenID Connect Discovery 1.0, section 4.3: the issuer it names is exactly the one asked.
    if document.get("issuer") != issuer:
        raise provider_failed(
            "The provider's discovery document names another issuer than the one configured."
        )
    methods = document.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise provider_failed("The provider does not support PKCE with S256.")
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        _endpoint(document, name)
    return document


async def discover(issuer: str) -> dict:
    async def run():
        async with async_client(TIMEOUT_SECONDS) as client:
            return await _discover(client, issuer)

    return await _call(run)


def authorization_request(
    *, document: dict, client_id: str, redirect_uri: str, scopes: str
) -> AuthorizationRequest:
    state = generate_token(43)
    nonce = generate_token(43)
    # RFC 7636: 43-128 characters of the unreserved set; generate_token draws letters and digits.
    code_verifier = generate_token(64)
    url = prepare_grant_uri(
        document["authorization_endpoint"],
        client_id=client_id,
        response_type="code",
        redirect_uri=redirect_uri,
        scope=scopes,
        state=state,
        nonce=nonce,
        code_challenge=create_s256_code_challenge(code_verifier),
        code_challenge_method="S256",
    )
    return AuthorizationRequest(url=url, state=state, nonce=nonce, code_verifier=code_verifier)


def _client_auth(
    document: dict, client_id: str, client_secret: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Headers and extra body fields that authenticate the client at the token endpoint."""
    if not client_secret:
        return {}, {"client_id": client_id}
    methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    if "client_secret_basic" not in methods and "client_secret_post" in methods:
        return {}, {"client_id": client_id, "client_secret": client_secret}
    # RFC 6749 section 2.3.1: each part form-encoded before the Basic encoding.
    raw = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}, {}


def _verify_id_token(
    *, id_token: str, jwks: dict, issuer: str, client_id: str, nonce: str, access_token: str
) -> dict:
    if not isinstance(id_token, str) or len(id_token) > MAX_DOCUMENT_BYTES:
        raise provider_failed("The provider's token response has no ID token.")
    try:
        keys = KeySet.import_key_set(jwks)
    except (JoseError, ValueError, TypeError, KeyError):
        raise provider_failed("The provider's JWKS cannot be read.") from None
    try:
        token = jwt.decode(id_token, keys, algorithms=list(ID_TOKEN_ALGORITHMS))
    except JoseError as exc:
        raise token_refused(
            f"The ID token's signature does not verify with the provider's published keys "
            f"({exc.error})."
        ) from None
    except (ValueError, TypeError):
        raise token_refused("The ID token is not a valid signed JWT.") from None
    claims = CodeIDToken(
        token.claims,
        token.header,
        options={
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": client_id},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
            "nonce": {"essential": True},
        },
        params={"nonce": nonce, "client_id": client_id, "access_token": access_token},
    )
    try:
        claims.validate(leeway=CLOCK_LEEWAY_SECONDS)
    except ExpiredTokenError:
        raise token_refused("The ID token has expired.") from None
    except JoseError as exc:
        claim = getattr(exc, "claim", None) or str(exc.description or exc.error)
        names = {
            "iss": "was issued by another issuer than the one configured",
            "aud": "is meant for another client",
            "nonce": "does not carry the nonce of this sign-in",
            "azp": "names another authorized party",
        }
        reason = names.get(claim, f"has an invalid or missing claim ({claim})")
        raise token_refused(f"The ID token {reason}.") from None
    return dict(claims)


async def code_exchange(
    *,
    issuer: str,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    code: str,
    code_verifier: str,
    nonce: str,
    claim: str = "",
) -> Assertion:
    """Trade the code for tokens, verify the ID token, and read the email it vouches for (and
    `claim`, the mapping's), from the userinfo endpoint when the ID token does not carry them."""

    async def run() -> Assertion:
        async with async_client(TIMEOUT_SECONDS) as client:
            document = await _discover(client, issuer)
            headers, extra = _client_auth(document, client_id, client_secret)
            body = prepare_token_request(
                "authorization_code",
                redirect_uri=redirect_uri,
                code=code,
                code_verifier=code_verifier,
                **extra,
            )
            async with client.stream(
                "POST",
                _endpoint(document, "token_endpoint"),
                content=body,
                headers={
                    **headers,
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Accept": "application/json",
                },
            ) as response:
                tokens = await _json(response, "token")
            jwks = await _get(client, _endpoint(document, "jwks_uri"), "JWKS")
            access_token = tokens.get("access_token")
            access_token = access_token if isinstance(access_token, str) else ""
            claims = _verify_id_token(
                id_token=tokens.get("id_token"),
                jwks=jwks,
                issuer=issuer,
                client_id=client_id,
                nonce=nonce,
                access_token=access_token,
            )
            missing = "email" not in claims or (claim and claim not in claims)
            if missing and access_token and document.get("userinfo_endpoint"):
                info = await _get(
                    client,
                    _endpoint(document, "userinfo_endpoint"),
                    "userinfo",
                    headers={"Authorization": f"Bearer {access_token}"},
                )
                # OpenID Connect Core 5.3.2: userinfo about another subject is discarded.
                if info.get("sub") == claims["sub"]:
                    claims = {**info, **claims}
            return _assertion(issuer, claims)

    return await _call(run)


def _assertion(issuer: str, claims: dict) -> Assertion:
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email or len(email) > 254:
        raise SsoError(
            "The provider did not share an email address; allow the email scope for Cadence.",
            "sso_email_missing",
            status=403,
        )
    verified = claims.get("email_verified")
    return Assertion(
        issuer=issuer,
        subject=str(claims["sub"])[:255],
        email=email.strip().lower(),
        email_verified=verified is True or verified == "true",
        claims=claims,
    )
