"""Service-account key parsing, the RS256 assertion, and the token cache against the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jwt
import orjson
import pytest

from adapters.android.oauth import (
    TokenProvider,
    build_assertion,
    load_service_account,
    parse_service_account,
)
from adapters.android.settings import EMM_SCOPE, AndroidSettings
from broker.errors import VendorAuthError, VendorUnavailableError
from simulators.android.auth import AuthState
from simulators.android.control import Fault
from simulators.android.keys import generate_service_account, write_service_account
from simulators.android.runner import SimulatorServer
from simulators.android.server import EmmSimulator

EMAIL = "broker@sim-project.iam.gserviceaccount.com"


def test_assertion_claims_and_signature() -> None:
    doc, public_pem = generate_service_account(client_email=EMAIL)
    key = parse_service_account(orjson.dumps(doc), "test")
    token = build_assertion(
        key, scope=EMM_SCOPE, audience="https://t/token", now=1000, lifetime_s=3600
    )
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["kid"] == doc["private_key_id"]
    claims = jwt.decode(
        token,
        public_pem,
        algorithms=["RS256"],
        audience="https://t/token",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims == {
        "iss": EMAIL,
        "scope": EMM_SCOPE,
        "aud": "https://t/token",
        "iat": 1000,
        "exp": 4600,
    }


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"not json", "is not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"client_email": "a@b"}', "lacks private_key"),
    ],
)
def test_bad_key_files_raise_auth_errors_naming_the_problem(content: bytes, fragment: str) -> None:
    with pytest.raises(VendorAuthError, match=fragment):
        parse_service_account(content, "sa.json")


def test_unusable_private_key_does_not_leak_it() -> None:
    key = parse_service_account(b'{"client_email": "a@b", "private_key": "SECRET-PEM"}', "x")
    with pytest.raises(VendorAuthError) as caught:
        build_assertion(key, scope="s", audience="a", now=0, lifetime_s=60)
    assert "SECRET" not in str(caught.value)
    assert "SECRET" not in repr(key)


def test_missing_key_file_is_a_clear_error(tmp_path: Path) -> None:
    settings = AndroidSettings(enabled=True, service_account_file=tmp_path / "nope.json")
    with pytest.raises(VendorAuthError, match="cannot read service account key"):
        load_service_account(settings)


@pytest.fixture
async def sim_and_key(tmp_path: Path) -> AsyncIterator[tuple[SimulatorServer, Path]]:
    doc, public_pem = generate_service_account(client_email=EMAIL)
    key_path = tmp_path / "sa.json"
    write_service_account(key_path, doc)
    sim = EmmSimulator(auth=AuthState(accounts={EMAIL: [public_pem]}))
    async with SimulatorServer(sim) as server:
        yield server, key_path


def _settings(server: SimulatorServer, key: Path, **extra: object) -> AndroidSettings:
    return AndroidSettings(
        enabled=True, service_account_file=key, token_url=server.token_url, **extra
    )


async def test_token_is_cached_shared_and_refetched_after_invalidate(
    sim_and_key: tuple[SimulatorServer, Path],
) -> None:
    server, key = sim_and_key
    async with aiohttp.ClientSession() as session:
        provider = TokenProvider(_settings(server, key), session)
        tokens = await asyncio.gather(*(provider.get() for _ in range(5)))
        assert len(set(tokens)) == 1
        assert provider.fetches == 1
        assert await provider.get() == tokens[0]
        provider.invalidate()
        assert await provider.get() != tokens[0]
        assert provider.fetches == 2
    assert server.simulator.auth.tokens_issued == 2


async def test_token_refreshed_before_expiry(sim_and_key: tuple[SimulatorServer, Path]) -> None:
    server, key = sim_and_key
    server.simulator.auth.token_lifetime_s = 1
    async with aiohttp.ClientSession() as session:
        now = [1000.0]
        provider = TokenProvider(
            _settings(server, key, token_refresh_margin_s=300.0), session, monotonic=lambda: now[0]
        )
        first = await provider.get()
        now[0] += 0.4  # before half of the 1 s lifetime (the margin is capped at half): cached
        assert await provider.get() == first
        now[0] += 0.2  # past half of it: refreshed although still valid
        assert await provider.get() != first
        assert provider.fetches == 2


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"accepted_scopes": {"https://www.googleapis.com/auth/other"}}, "invalid_scope"),
        ({"clock_offset_s": 7200.0}, "short-lived token"),
        ({"audience": "https://oauth2.googleapis.com/token"}, "Failed audience check"),
        ({"accounts": {}}, "account not found"),
    ],
)
async def test_token_endpoint_rejections_are_auth_errors_with_googles_reason(
    sim_and_key: tuple[SimulatorServer, Path], change: dict[str, object], fragment: str
) -> None:
    server, key = sim_and_key
    for name, value in change.items():
        setattr(server.simulator.auth, name, value)
    async with aiohttp.ClientSession() as session:
        provider = TokenProvider(_settings(server, key), session)
        with pytest.raises(VendorAuthError, match=fragment):
            await provider.get()


async def test_wrong_key_is_invalid_signature(sim_and_key: tuple[SimulatorServer, Path]) -> None:
    server, key = sim_and_key
    other, _ = generate_service_account(client_email=EMAIL)
    write_service_account(key, other)
    async with aiohttp.ClientSession() as session:
        provider = TokenProvider(_settings(server, key), session)
        with pytest.raises(VendorAuthError, match="Invalid JWT Signature"):
            await provider.get()


async def test_token_endpoint_5xx_is_retriable(sim_and_key: tuple[SimulatorServer, Path]) -> None:
    server, key = sim_and_key
    server.simulator.faults.append(Fault("token", 503, 1))
    async with aiohttp.ClientSession() as session:
        provider = TokenProvider(_settings(server, key), session)
        with pytest.raises(VendorUnavailableError) as caught:
            await provider.get()
        assert caught.value.status == 503
        assert await provider.get()
