"""A small OpenID Connect provider for the tests, run as its own process on loopback.

Flask serves it; joserfc signs its ID tokens with its own RSA key and publishes that key as its
JWKS; Authlib's PKCE helper checks the code verifier. It implements discovery, authorize (which
approves the configured test user at once), token (client_secret_basic or _post, single-use
codes, PKCE S256 required), JWKS and userinfo.

The tests steer it through `POST /_test/config` (JSON, merged): `client_id`, `client_secret`,
`redirect_uris`, `user` (the claims of the person who "signs in"), `userinfo_only` and
`userinfo_claims` (claims only userinfo gives), and `fault`, which makes the
next ID tokens wrong in one way: `issuer` (another iss), `rogue_key` (signed with a key that is
not in the JWKS, under the published key's kid), `expired`, `nonce` (another nonce), `audience`.

    python oidc_provider.py            # prints "PORT <n>" once it listens on 127.0.0.1:<n>
"""

from __future__ import annotations

import secrets
import sys
import threading
import time
from urllib.parse import urlencode

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from flask import Flask, jsonify, redirect, request
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import make_server

KID = "test-key-1"
SIGNING_KEY = RSAKey.generate_key(2048, parameters={"kid": KID, "use": "sig", "alg": "RS256"})
ROGUE_KEY = RSAKey.generate_key(2048, parameters={"kid": KID, "use": "sig", "alg": "RS256"})

app = Flask(__name__)
lock = threading.Lock()
config: dict = {
    "client_id": "cadence-test",
    "client_secret": "test-secret",
    "redirect_uris": [],
    "user": {"sub": "user-1", "email": "ada@example.test", "email_verified": True},
    "fault": None,
    # True: the ID token carries only `sub`, the rest comes from userinfo.
    "userinfo_only": False,
    # Claims left out of the ID token (userinfo has them).
    "userinfo_claims": [],
}
codes: dict[str, dict] = {}
access_tokens: dict[str, dict] = {}
seen: list[dict] = []


def issuer() -> str:
    return request.host_url.rstrip("/")


def oauth_error(error: str, status: int = 400, description: str = ""):
    return jsonify({"error": error, "error_description": description}), status


@app.post("/_test/config")
def set_config():
    with lock:
        config.update(request.get_json())
        codes.clear()
        seen.clear()
    return jsonify({"ok": True})


@app.get("/_test/seen")
def get_seen():
    return jsonify(seen)


@app.get("/.well-known/openid-configuration")
def discovery():
    base = issuer()
    return jsonify(
        {
            "issuer": base,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks",
            "userinfo_endpoint": f"{base}/userinfo",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid", "email", "profile", "groups"],
        }
    )


@app.get("/jwks")
def jwks():
    return jsonify(KeySet([SIGNING_KEY]).as_dict(private=False))


@app.get("/authorize")
def authorize():
    args = request.args
    with lock:
        seen.append({"endpoint": "authorize", **args})
        if args.get("client_id") != config["client_id"]:
            return oauth_error("unauthorized_client")
        if args.get("redirect_uri") not in config["redirect_uris"]:
            return oauth_error("invalid_request", description="unregistered redirect_uri")
    if args.get("response_type") != "code" or "openid" not in args.get("scope", "").split():
        return oauth_error("invalid_request")
    if args.get("code_challenge_method") != "S256" or not args.get("code_challenge"):
        return oauth_error("invalid_request", description="PKCE S256 is required")
    code = secrets.token_urlsafe(24)
    with lock:
        codes[code] = {
            "challenge": args["code_challenge"],
            "redirect_uri": args["redirect_uri"],
            "nonce": args.get("nonce"),
            "user": dict(config["user"]),
            "expires": time.time() + 60,
        }
    query = urlencode({"code": code, "state": args.get("state", "")})
    return redirect(f"{args['redirect_uri']}?{query}", code=302)


def _client_ok() -> bool:
    auth = request.authorization
    if auth is not None and auth.type == "basic":
        client_id, client_secret = auth.username, auth.password
    else:
        client_id, client_secret = request.form.get("client_id"), request.form.get("client_secret")
    return client_id == config["client_id"] and client_secret == config["client_secret"]


def _id_token(grant: dict, access_token: str) -> str:
    fault = config.get("fault")
    now = int(time.time())
    user = dict(grant["user"])
    if config.get("userinfo_only"):
        user = {"sub": user["sub"]}
    for name in config.get("userinfo_claims") or ():
        user.pop(name, None)
    claims = {
        **user,
        "iss": "https://evil.example.test" if fault == "issuer" else issuer(),
        "aud": "someone-else" if fault == "audience" else config["client_id"],
        "iat": now - 7200 if fault == "expired" else now,
        "exp": now - 3600 if fault == "expired" else now + 300,
        "nonce": "not-the-nonce" if fault == "nonce" else grant["nonce"],
    }
    key = ROGUE_KEY if fault == "rogue_key" else SIGNING_KEY
    return jwt.encode({"alg": "RS256", "kid": KID}, claims, key)


@app.post("/token")
def token():
    form = request.form
    with lock:
        seen.append({"endpoint": "token", **{k: v for k, v in form.items() if k != "code"}})
        if not _client_ok():
            return oauth_error("invalid_client", 401)
        grant = codes.pop(form.get("code", ""), None)  # single use
    if form.get("grant_type") != "authorization_code" or grant is None:
        return oauth_error("invalid_grant")
    if grant["expires"] < time.time() or form.get("redirect_uri") != grant["redirect_uri"]:
        return oauth_error("invalid_grant")
    verifier = form.get("code_verifier", "")
    if not verifier or create_s256_code_challenge(verifier) != grant["challenge"]:
        return oauth_error("invalid_grant", description="PKCE verification failed")
    access_token = secrets.token_urlsafe(24)
    with lock:
        access_tokens[access_token] = grant["user"]
        id_token = _id_token(grant, access_token)
    return jsonify(
        {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token,
        }
    )


@app.get("/userinfo")
def userinfo():
    header = request.headers.get("Authorization", "")
    user = access_tokens.get(header.removeprefix("Bearer ").strip())
    if user is None:
        return oauth_error("invalid_token", 401)
    return jsonify(user)


def main() -> None:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    sys.stdout.write(f"PORT {server.server_port}\n")
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
