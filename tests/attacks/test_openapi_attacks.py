"""What `GET /api/v1/openapi.json` gives anyone (it needs no login): the API's shape, never
the deployment's configuration — no webhook URL or secret, no data directory, no user."""

from __future__ import annotations

import httpx
import pytest

from tests.auth.conftest import StartMarkco
from tests.events.test_events_api import QUIET

SECRET_ENV = "MARKCO_ATTACKS_WEBHOOK_SECRET"
SECRET = "whsec-never-in-the-spec"
HOOK = "http://127.0.0.1:9/hook-path-never-in-the-spec?key=also-never"


async def test_the_openapi_document_leaks_no_configuration(
        start_markco: StartMarkco, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    markco = await start_markco(auth=QUIET + f"""
[webhooks.endpoints.billing]
url = "{HOOK}"
types = ["user.plan_changed"]
secret_env = "{SECRET_ENV}"
""")
    await markco.user("alice-never-in-the-spec")
    async with httpx.AsyncClient(base_url=markco.url, trust_env=False, timeout=10) as http:
        response = await http.get("/api/v1/openapi.json")
    assert response.status_code == 200
    text = response.text
    for leak in (SECRET, SECRET_ENV, "hook-path-never-in-the-spec", "also-never",
                 "alice-never-in-the-spec", str(markco.daemon.config.data_dir),
                 "billing"):
        assert leak not in text, leak
