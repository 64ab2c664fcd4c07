"""Google's service-account key files and the JWTs signed with them, through google-auth and cryptography.

A key file is what `gcloud iam service-accounts keys create` writes: google-auth reads it unchanged
(GOOGLE_APPLICATION_CREDENTIALS) and either posts a signed JWT to its `token_uri` (the OAuth 2.0 JWT-bearer
grant) or sends a self-signed JWT as the bearer token. Only the public key is kept by Beamport.
"""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import exceptions as auth_exceptions
from google.auth import jwt

MAX_JWT_LIFETIME_S = 3600  # Google's limit for assertions and self-signed JWTs
CLOCK_SKEW_S = 60


class InvalidJwt(Exception):
    """A JWT that is malformed, not signed by a key we know, expired, or not meant for us."""


def new_key_pair() -> tuple[str, str, str]:
    """(key id, private key PEM (PKCS#8), public key PEM) of a new RSA 2048 key."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return secrets.token_hex(20), private_pem, public_pem


def key_file(email: str, project_id: str, key_id: str, private_pem: str, root_url: str) -> dict:
    """A key file in Google's JSON format whose token_uri is this server's token endpoint."""
    root = root_url.rstrip("/")
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": key_id,
        "private_key": private_pem,
        "client_email": email,
        "client_id": str(int(key_id[:16], 16)),
        "auth_uri": f"{root}/o/oauth2/auth",
        "token_uri": f"{root}/token",
        "auth_provider_x509_cert_url": f"{root}/oauth2/v1/certs",
        "client_x509_cert_url": f"{root}/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    }


def unverified_key_id(token: str) -> str:
    """The `kid` of a JWT's header (before its signature is checked)."""
    try:
        header = jwt.decode_header(token)
    except (ValueError, auth_exceptions.GoogleAuthError) as exc:
        raise InvalidJwt(f"not a JWT ({exc})") from None
    kid = header.get("kid") if isinstance(header, dict) else None
    if header.get("alg") != "RS256" or not isinstance(kid, str):
        raise InvalidJwt("the JWT must be RS256-signed and name its key (kid)")
    return kid


def verify(token: str, key_id: str, public_pem: str) -> dict:
    """The claims of a JWT signed with the key, issued by its account, unexpired and short-lived."""
    try:
        claims = jwt.decode(token, certs={key_id: public_pem}, clock_skew_in_seconds=CLOCK_SKEW_S)
    except (ValueError, auth_exceptions.GoogleAuthError) as exc:
        raise InvalidJwt(str(exc)) from None
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, (int, float)) or not isinstance(exp, (int, float)):
        raise InvalidJwt("the JWT must carry iat and exp")
    if exp - iat > MAX_JWT_LIFETIME_S + CLOCK_SKEW_S:
        raise InvalidJwt(f"the JWT is valid for {exp - iat:.0f} s, more than {MAX_JWT_LIFETIME_S} s")
    iss, sub = claims.get("iss"), claims.get("sub", claims.get("iss"))
    if not isinstance(iss, str) or iss != sub:
        raise InvalidJwt("the JWT's iss and sub must both be the service account's email")
    return claims
