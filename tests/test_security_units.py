"""Units of the security decisions: who counts as a loopback client, operator tokens
signed by JWKS keys, conversation tokens and their secret, site origins and CORS."""

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jwt

from app.config import Settings
from app.errors import ApiError
from app.security import operators
from app.security.operators import OperatorAuth, client_is_loopback
from app.security.sites import SiteKeys, cors_origins, normalize_origin
from app.security.visitors import VisitorTokens, load_secret

JWKS_URL = "https://project.example/auth/v1/.well-known/jwks.json"


# Loopback clients (the decision behind the loopback-only mode)


@pytest.mark.parametrize(
    ("host", "headers", "loopback"),
    [
        ("127.0.0.1", {}, True),
        ("127.8.9.10", {}, True),
        ("::1", {}, True),
        ("::ffff:127.0.0.1", {}, True),
        ("203.0.113.5", {}, False),
        ("10.0.0.2", {}, False),
        ("::ffff:10.0.0.2", {}, False),
        ("testclient", {}, False),
        (None, {}, False),
        ("127.0.0.1", {"x-forwarded-for": "203.0.113.5"}, False),
        ("127.0.0.1", {"x-forwarded-for": "127.0.0.1, 198.51.100.7"}, False),
        ("127.0.0.1", {"x-forwarded-for": "127.0.0.1"}, True),
        ("127.0.0.1", {"x-real-ip": "198.51.100.7"}, False),
        ("127.0.0.1", {"forwarded": 'for="[2001:db8::1]:4711";proto=https'}, False),
        ("127.0.0.1", {"forwarded": "for=192.0.2.60:8080"}, False),
        ("127.0.0.1", {"forwarded": "for=unknown"}, False),
        ("127.0.0.1", {"forwarded": 'for="[::1]:5000", for=127.0.0.1'}, True),
    ],
)
def test_who_is_a_loopback_client(host: str | None, headers: dict, loopback: bool) -> None:
    assert client_is_loopback(host, headers) is loopback


async def test_loopback_only_mode_admits_loopback_clients_only() -> None:
    auth = OperatorAuth(Settings(_env_file=None))
    assert auth.mode == "loopback_only"
    operator = await auth.authenticate(None, "127.0.0.1", {})
    assert operator is not None and operator.via == "loopback"
    assert await auth.authenticate(None, "203.0.113.5", {}) is None
    missing = auth.missing()
    assert (missing.status, missing.code) == (401, "missing_token")
    assert missing.headers == {"WWW-Authenticate": "Bearer"}
    assert "JWT_SECRET" in missing.message
    with pytest.raises(ApiError) as refused:  # a remote client's token cannot be checked
        await auth.authenticate("a.b.c", "203.0.113.5", {})
    assert refused.value.code == "invalid_token"


# Operator tokens signed with keys from JWKS_URL


def _pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_jwk(key: Any, alg: str, kid: str) -> dict[str, Any]:
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {**jwk.construct(public, alg).to_dict(), "kid": kid, "use": "sig"}


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def signed(key: Any, alg: str, kid: str, role: str = "service_role", **claims: Any) -> str:
    body = {"role": role, "aud": "authenticated", "exp": int(time.time()) + 600, **claims}
    return jwt.encode(body, _pem(key).decode(), algorithm=alg, headers={"kid": kid})


@pytest.fixture
async def jwks_auth() -> Any:
    settings = Settings(_env_file=None, jwks_url=JWKS_URL, jwt_audience="authenticated")
    async with httpx.AsyncClient() as http:
        yield OperatorAuth(settings, http)


@respx.mock
async def test_rs256_and_es256_tokens_verify_with_the_published_keys(jwks_auth: Any) -> None:
    keys = [_public_jwk(RSA_KEY, "RS256", "rsa-1"), _public_jwk(EC_KEY, "ES256", "ec-1")]
    route = respx.get(JWKS_URL).respond(json={"keys": keys})
    assert jwks_auth.mode == "jwt"
    rsa_op = await jwks_auth.verify(signed(RSA_KEY, "RS256", "rsa-1", sub="u1"))
    ec_op = await jwks_auth.verify(signed(EC_KEY, "ES256", "ec-1", role="operator"))
    assert (rsa_op.role, rsa_op.subject, rsa_op.via) == ("service_role", "u1", "jwt")
    assert ec_op.role == "operator"
    assert route.call_count == 1  # the keys are cached

    with pytest.raises(ApiError) as wrong_key:  # signed by a key the issuer never published
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        await jwks_auth.verify(signed(other, "RS256", "rsa-1"))
    assert wrong_key.value.code == "invalid_token"
    with pytest.raises(ApiError) as role:
        await jwks_auth.verify(signed(RSA_KEY, "RS256", "rsa-1", role="authenticated"))
    assert (role.value.status, role.value.code) == (403, "forbidden_role")
    # An HS256 token needs JWT_SECRET: a public key is never used as an HMAC secret.
    with pytest.raises(ApiError) as hs256:
        await jwks_auth.verify(jwt.encode({"role": "operator"}, "x", algorithm="HS256"))
    assert "JWT_SECRET is not set" in hs256.value.message


@respx.mock
async def test_an_unknown_key_id_refetches_the_keys_at_most_so_often(
    jwks_auth: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    route = respx.get(JWKS_URL)
    route.side_effect = [
        httpx.Response(200, json={"keys": [_public_jwk(RSA_KEY, "RS256", "old")]}),
        httpx.Response(200, json={"keys": [_public_jwk(RSA_KEY, "RS256", "new")]}),
    ]
    await jwks_auth.verify(signed(RSA_KEY, "RS256", "old"))
    with pytest.raises(ApiError) as unknown:  # fetched just now: not asked again yet
        await jwks_auth.verify(signed(RSA_KEY, "RS256", "new"))
    assert "No RS256 key 'new'" in unknown.value.message
    assert route.call_count == 1
    monkeypatch.setattr(operators, "JWKS_RETRY_SECONDS", 0.0)
    jwks_auth.jwks.fetched_at -= 2  # the rotation happened a moment ago
    assert (await jwks_auth.verify(signed(RSA_KEY, "RS256", "new"))).role == "service_role"
    assert route.call_count == 2


@respx.mock
async def test_unreachable_keys_are_a_503_and_stale_keys_keep_working(jwks_auth: Any) -> None:
    route = respx.get(JWKS_URL)
    route.side_effect = httpx.ConnectError("refused")
    with pytest.raises(ApiError) as down:
        await jwks_auth.verify(signed(RSA_KEY, "RS256", "k"))
    assert (down.value.status, down.value.code) == (503, "auth_unavailable")
    route.side_effect = None
    route.respond(json={"keys": [_public_jwk(RSA_KEY, "RS256", "k")]})
    jwks_auth.jwks.fetched_at = float("-inf")
    await jwks_auth.verify(signed(RSA_KEY, "RS256", "k"))
    route.side_effect = httpx.ConnectError("refused")
    jwks_auth.jwks.fetched_at -= jwks_auth.jwks.ttl + 1  # expired: refetch fails, keys stay
    assert (await jwks_auth.verify(signed(RSA_KEY, "RS256", "k"))).via == "jwt"


async def test_tokens_without_an_accepted_algorithm_are_refused() -> None:
    auth = OperatorAuth(Settings(_env_file=None, jwt_secret="s"))
    no_expiry = jwt.encode({"role": "operator"}, "s", algorithm="HS256")
    payload = no_expiry.split(".")[1]
    none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"  # {"alg":"none","typ":"JWT"}
    for bad in (f"{none_header}.{payload}.", jwt.encode({"role": "x"}, "s", algorithm="HS512")):
        with pytest.raises(ApiError) as refused:
            await auth.verify(bad)
        assert refused.value.code == "invalid_token"
        assert "not accepted" in refused.value.message
    with pytest.raises(ApiError, match="expiry"):
        await auth.verify(no_expiry)


# Conversation tokens


def test_conversation_tokens_name_one_conversation() -> None:
    tokens = VisitorTokens(b"secret")
    a = tokens.issue("conversation-a")
    assert tokens.valid(a, "conversation-a")
    assert not tokens.valid(a, "conversation-b")
    assert not VisitorTokens(b"other").valid(a, "conversation-a")
    assert not tokens.valid(a[:-1], "conversation-a")


def test_the_generated_secret_is_kept_in_the_data_dir(tmp_path: Path) -> None:
    first = load_secret(Settings(_env_file=None, data_dir=tmp_path / "a"))
    assert first == load_secret(Settings(_env_file=None, data_dir=tmp_path / "a"))
    assert first != load_secret(Settings(_env_file=None, data_dir=tmp_path / "b"))
    kept = tmp_path / "a" / "visitor_token_secret"
    assert kept.stat().st_mode & 0o077 == 0  # readable by the server's user only
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["visitor_token_secret"]
    given = Settings(_env_file=None, data_dir=tmp_path / "a", visitor_token_secret="mine")
    assert load_secret(given) == b"mine"


# Sites and CORS


def test_origins_compare_as_browsers_send_them() -> None:
    assert normalize_origin("HTTPS://Shop.Example:443/") == "https://shop.example"
    assert normalize_origin("http://localhost:3000") == "http://localhost:3000"
    assert normalize_origin("http://[::1]:80") == "http://[::1]"
    sites = SiteKeys.from_settings(
        Settings(_env_file=None, site_keys={"shop": ["https://shop.example"], "any": ["*"]})
    )
    sites.check("shop", "https://shop.example")
    sites.check("any", "https://whatever.example")
    for key, origin, code in [
        (None, "https://shop.example", "unknown_site_key"),
        ("nope", "https://shop.example", "unknown_site_key"),
        ("shop", "https://shop.example.evil", "origin_not_allowed"),
        ("shop", "http://shop.example", "origin_not_allowed"),
        ("shop", None, "origin_not_allowed"),
    ]:
        with pytest.raises(ApiError) as refused:
            sites.check(key, origin)
        assert (refused.value.status, refused.value.code) == (403, code)
    SiteKeys.from_settings(Settings(_env_file=None)).check(None, None)  # open by default


def test_cors_follows_the_registered_sites() -> None:
    assert cors_origins(Settings(_env_file=None)) == ["*"]
    sites = {"a": ["https://a.example"], "b": ["https://b.example/"]}
    assert cors_origins(Settings(_env_file=None, site_keys=sites)) == [
        "https://a.example",
        "https://b.example",
    ]
    extra = Settings(_env_file=None, site_keys=sites, cors_origins=["https://admin.example"])
    assert "https://admin.example" in cors_origins(extra)
    anywhere = Settings(_env_file=None, site_keys={"any": ["*"]})
    assert cors_origins(anywhere) == ["*"]
