"""Webhooks in a running daemon: `[webhooks]` in its config, a plan change made through the
API reaches a loopback receiver signed and verified, and an administrator reads the delivery
log through the API and the CLI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import pytest
import trio

from markco_trio.testing.webhook_receiver import running_webhook_receiver
from tests.auth.conftest import StartMarkco
from tests.compute.polling import eventually_async

from .conftest import WEBHOOK_SECRET, WEBHOOK_SECRET_ENV
from .test_events_api import QUIET, token

ROOT = Path(__file__).resolve().parents[2]


async def test_a_plan_change_is_delivered_to_a_configured_webhook_and_logged(
        start_markco: StartMarkco, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WEBHOOK_SECRET_ENV, WEBHOOK_SECRET)
    async with running_webhook_receiver(WEBHOOK_SECRET, script=[502]) as receiver:
        markco = await start_markco(auth=QUIET + f"""
[webhooks]
backoff_initial = 0.05
backoff_max = 0.1

[webhooks.endpoints.billing]
url = "{receiver.url}"
types = ["user.plan_changed"]
secret_env = "{WEBHOOK_SECRET_ENV}"
""")
        alice, admin = await markco.user("alice"), await markco.user("root", admin=True)
        headers = await token(markco, admin, "admin")
        async with httpx.AsyncClient(base_url=markco.url, trust_env=False, timeout=10) as http:
            changed = await http.put(f"/api/v1/users/{alice.id}/plan", json={"plan": "pro"},
                                     headers=headers)
            assert changed.status_code == 200
            with trio.fail_after(10):
                await receiver.wait_accepted(1)
            (delivered,) = receiver.accepted
            assert delivered.json()["type"] == "user.plan_changed"
            assert delivered.json()["data"] == {"old": "free", "new": "pro", "by": "root"}
            assert [r.status for r in receiver.requests] == [502, 204]  # retried, verified

            async def both_logged() -> bool:
                answer = await http.get("/api/v1/webhooks/deliveries", headers=headers)
                return len(answer.json()["items"]) == 2

            await eventually_async(both_logged, what="both attempts in the delivery log")
            log = (await http.get("/api/v1/webhooks/deliveries", headers=headers,
                                  params={"webhook": "billing"})).json()["items"]
            listed = (await http.get("/api/v1/webhooks", headers=headers)).json()["items"]
    assert [(d["attempt"], d["outcome"], d["status_code"]) for d in log] == [
        (1, "retrying", 502), (2, "delivered", 204)]
    assert "secret" not in json.dumps(listed)
    assert listed == [{"name": "billing", "url": receiver.url, "types": ["user.plan_changed"],
                       "queued": 1, "dropped": 0}]
    cli = await trio.run_process(
        [sys.executable, "-m", "markco_trio", "webhooks", "deliveries", "--config",
         str(markco.config_path), "--json"], capture_stdout=True, capture_stderr=True,
        check=False, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT))
    assert cli.returncode == 0, cli.stderr.decode()
    assert [d["outcome"] for d in json.loads(cli.stdout)] == ["retrying", "delivered"]
