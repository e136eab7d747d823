"""The OpenAPI description of `/api/v1`: built from the app's real routes, every route
documented and every description a route, the error shape and scopes stated, served anonymously
at `/api/v1/openapi.json`."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from quart import Blueprint

from markco_trio.api.app import build_app
from markco_trio.api.openapi import (
    BUILTIN,
    Operation,
    build_spec,
    document,
    openapi_path,
    stale,
    undocumented,
)
from markco_trio.authz import KNOWN_SCOPES
from markco_trio.daemon import Daemon

Start = Callable[..., Awaitable[tuple[Daemon, int]]]


@pytest.fixture
async def live(daemon: Start) -> tuple[Daemon, int]:
    """A daemon with every built-in plugin that contributes API routes."""
    return await daemon('[auth]\nlogin_link = "never"\n')


async def fetch_spec(port: int) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False) as client:
        answer = await client.get(f"http://127.0.0.1:{port}/api/v1/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    spec: dict[str, Any] = answer.json()
    return spec


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in spec["paths"].items()
            for method, op in item.items()]


async def test_every_api_route_is_documented(live: tuple[Daemon, int]) -> None:
    d, _ = live
    app = build_app(d.ctx)
    assert undocumented(app) == [], "describe these routes in markco_trio/api/openapi.py " \
        "(BUILTIN) or with @document(...) next to them"


async def test_every_description_is_a_route_that_exists(live: tuple[Daemon, int]) -> None:
    d, _ = live
    assert stale(build_app(d.ctx)) == []


async def test_the_spec_is_served_anonymously_and_lists_the_routes(
        live: tuple[Daemon, int]) -> None:
    d, port = live
    spec = await fetch_spec(port)
    assert spec["openapi"] == "3.1.0"
    served = {(m, p) for m, p, _ in operations(spec)}
    app_routes = {(m, openapi_path(r.rule)) for r in build_app(d.ctx).url_map.iter_rules()
                  if r.rule.startswith("/api/v1")
                  for m in (r.methods or set()) - {"HEAD", "OPTIONS"}}
    assert served == app_routes
    assert ("GET", "/api/v1/openapi.json") in served


async def test_every_error_answer_has_the_one_error_shape(live: tuple[Daemon, int]) -> None:
    _, port = live
    spec = await fetch_spec(port)
    error = spec["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["required"] == ["code", "message"]
    for method, path, op in operations(spec):
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)


async def test_every_operation_states_its_scope(live: tuple[Daemon, int]) -> None:
    _, port = live
    spec = await fetch_spec(port)
    for method, path, op in operations(spec):
        scope = op["x-markco-scope"]
        assert scope is None or scope in KNOWN_SCOPES, (method, path, scope)
        anonymous = {} in op["security"]
        assert anonymous == (scope is None), (method, path)
        if scope is not None:
            assert f"`{scope}` scope" in op["description"]
            assert {"401", "403"} <= set(op["responses"]), (method, path)


async def test_operation_ids_are_unique(live: tuple[Daemon, int]) -> None:
    _, port = live
    ids = [op["operationId"] for _, _, op in operations(await fetch_spec(port))]
    assert len(ids) == len(set(ids))


async def test_path_parameters_are_declared(live: tuple[Daemon, int]) -> None:
    _, port = live
    for _, path, op in operations(await fetch_spec(port)):
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{([^}]+)}", path)), path


async def test_the_spec_answers_the_same_through_the_front_door_twice(
        live: tuple[Daemon, int]) -> None:
    _, port = live
    assert await fetch_spec(port) == await fetch_spec(port)


async def test_an_undocumented_route_is_named(live: tuple[Daemon, int]) -> None:
    d, _ = live
    app = build_app(d.ctx)
    bp = Blueprint("stray", __name__)

    @bp.get("/api/v1/stray/<thing_id>")
    async def stray(thing_id: str) -> dict[str, str]:
        return {}

    app.register_blueprint(bp)
    assert undocumented(app) == ["GET /api/v1/stray/{thing_id}"]
    assert "/api/v1/stray/{thing_id}" not in build_spec(app)["paths"]


async def test_a_route_described_next_to_it_is_in_the_spec(live: tuple[Daemon, int]) -> None:
    d, _ = live
    app = build_app(d.ctx)
    bp = Blueprint("documented", __name__)

    @bp.post("/api/v1/things")
    @document(Operation("Make a thing", ok={201: {"type": "object"}}, errors=(409,),
                        body={"type": "object"}))
    async def things() -> dict[str, str]:
        return {}

    app.register_blueprint(bp)
    assert undocumented(app) == []
    op = build_spec(app)["paths"]["/api/v1/things"]["post"]
    assert {"201", "400", "401", "403", "409", "503"} == set(op["responses"])
    assert op["x-markco-scope"] == "user"


def test_the_builtin_table_uses_known_scopes_only() -> None:
    for key, op in BUILTIN.items():
        assert op.scope is None or op.scope in KNOWN_SCOPES, key


def test_rules_become_openapi_paths() -> None:
    assert openapi_path("/api/v1/users/<user_id>/snapshots/<snapshot>/restore") == \
        "/api/v1/users/{user_id}/snapshots/{snapshot}/restore"
    assert openapi_path("/api/v1/files/<path:rest>") == "/api/v1/files/{rest}"
    assert openapi_path("/api/v1/n/<int(min=1):n>") == "/api/v1/n/{n}"
