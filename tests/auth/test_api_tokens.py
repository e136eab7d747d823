"""API tokens: created once (CLI and API), hashed, scoped, `Authorization: Bearer` only."""

from __future__ import annotations

import httpx
import trio

from .conftest import Markco, StartMarkco, eventually, markco_command, subprocess_env


async def create_token(markco: Markco, browser: httpx.AsyncClient, *scopes: str,
                       **extra: object) -> httpx.Response:
    return await browser.post("/api/v1/tokens", headers=markco.origin(),
                              json={"name": "test", "scopes": list(scopes), **extra})


def bearer(markco: Markco, token: str) -> httpx.AsyncClient:
    return markco.client(headers={"Authorization": f"Bearer {token}"})


async def test_a_token_created_through_the_api_is_shown_once_and_works(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("alice")
    created = await create_token(markco, browser, "user")
    assert created.status_code == 201
    body = created.json()
    assert body["token"].startswith("mkt_") and "token_hash" not in body
    me = (await bearer(markco, body["token"]).get("/api/v1/me")).json()
    assert me["user"]["username"] == "alice" and me["via"] == "token"
    assert me["scopes"] == ["user"]
    listed = (await browser.get("/api/v1/tokens")).json()["items"]
    assert [t["id"] for t in listed] == [body["id"]]
    assert "token" not in listed[0] and "token_hash" not in listed[0]
    assert len(await markco.events("token.created")) == 1


async def test_the_cli_creates_lists_and_revokes_tokens(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    await markco.user("alice")
    config = str(markco.config_path)
    created = await trio.run_process(
        markco_command("tokens", "create", "alice", "--scope", "user", "--scope",
                       "events:read", "--name", "deploy", "--expires-days", "30",
                       "--config", config),
        env=subprocess_env(), capture_stdout=True, capture_stderr=True, check=False)
    assert created.returncode == 0, created.stderr.decode()
    token = created.stdout.decode().strip()
    assert token.startswith("mkt_") and b"shown only now" in created.stderr
    client = bearer(markco, token)
    assert (await client.get("/api/v1/me")).json()["scopes"] == ["events:read", "user"]
    listed = await trio.run_process(
        markco_command("tokens", "list", "alice", "--json", "--config", config),
        env=subprocess_env(), capture_stdout=True, check=False)
    assert b'"deploy"' in listed.stdout and token.encode() not in listed.stdout
    token_id = (await markco.storage.list_api_tokens((await markco.user("alice")).id))[0].id
    revoked = await trio.run_process(
        markco_command("tokens", "revoke", token_id, "--config", config),
        env=subprocess_env(), capture_stdout=True, capture_stderr=True, check=False)
    assert revoked.returncode == 0, revoked.stderr.decode()
    async def refused() -> bool:
        return (await client.get("/api/v1/me")).status_code != 200

    await eventually(refused, within=3)  # the revocation epoch reaches the daemon's cache
    assert (await client.get("/api/v1/me")).status_code == 401


async def test_a_revoked_token_is_refused_at_once(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("alice")
    body = (await create_token(markco, browser, "user")).json()
    client = bearer(markco, body["token"])
    assert (await client.get("/api/v1/me")).status_code == 200
    response = await browser.delete(f"/api/v1/tokens/{body['id']}", headers=markco.origin())
    assert response.json() == {"revoked": True}
    refused = await client.get("/api/v1/me")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_token"


async def test_an_expired_token_is_refused(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("alice")
    body = (await create_token(markco, browser, "user", expires_days=1)).json()
    client = bearer(markco, body["token"])
    assert (await client.get("/api/v1/me")).status_code == 200
    markco.clock.advance(86400 + 1)
    assert (await client.get("/api/v1/me")).status_code == 401


async def test_a_token_without_the_scope_is_refused(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("root", admin=True)
    events_only = (await create_token(markco, browser, "events:read")).json()["token"]
    response = await bearer(markco, events_only).get("/api/v1/me")
    assert response.status_code == 403 and "'user' scope" in response.json()["error"]["message"]
    user_only = (await create_token(markco, browser, "user")).json()["token"]
    assert (await bearer(markco, user_only).get("/api/v1/users")).status_code == 403
    admin = (await create_token(markco, browser, "admin")).json()["token"]
    assert (await bearer(markco, admin).get("/api/v1/users")).status_code == 200


async def test_only_admins_get_the_admin_scope(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("alice")
    response = await create_token(markco, browser, "admin")
    assert response.status_code == 403
    assert "only administrators" in response.json()["error"]["message"]


async def test_a_token_cannot_mint_a_broader_token(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("root", admin=True)
    user_only = (await create_token(markco, browser, "user")).json()["token"]
    response = await bearer(markco, user_only).post(
        "/api/v1/tokens", json={"name": "escalate", "scopes": ["user", "admin"]})
    assert response.status_code == 403
    assert "more scopes than its own" in response.json()["error"]["message"]


async def test_unknown_scopes_and_bad_schemes_are_refused(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("alice")
    response = await create_token(markco, browser, "everything")
    assert response.status_code == 400 and "unknown scope" in response.text
    for header in ("Basic YWxpY2U6cHc=", "Bearer", "Bearer not-a-token", "Token mkt_x"):
        client = markco.client(headers={"Authorization": header})
        assert (await client.get("/api/v1/me")).status_code == 401, header


async def test_the_admin_user_list_is_cursor_paged(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("root", admin=True)
    for name in ("bob", "carol", "dave"):
        await markco.user(name)
    first = (await browser.get("/api/v1/users", params={"limit": 2})).json()
    assert [u["username"] for u in first["items"]] == ["bob", "carol"]
    second = (await browser.get("/api/v1/users", params={
        "limit": 2, "cursor": first["next_cursor"]})).json()
    assert [u["username"] for u in second["items"]] == ["dave", "root"]
    assert second["next_cursor"] is None
    alice = await markco.login_as("alice")
    assert (await alice.get("/api/v1/users")).status_code == 403
