"""Stored XSS on the admin page: what users control — their display name and email (from
GitHub), the data of events about them (a hint quoting their code, say) — is shown to an
administrator escaped, under a CSP that runs no script."""

from __future__ import annotations

from tests.auth.conftest import StartMarkco
from tests.events.test_events_api import QUIET, publish

PAYLOAD = '"><img src=x onerror=alert(1)><script>alert(2)</script>'


async def test_user_controlled_text_on_the_admin_page_is_escaped(
        start_markco: StartMarkco) -> None:
    markco = await start_markco(auth=QUIET)
    mallory = await markco.user("mallory")
    await markco.storage.update_user(mallory.id, name=PAYLOAD, email="m@example.org")
    await publish(markco, "gpu-hint", mallory, code=PAYLOAD, reason=PAYLOAD)
    admin = await markco.login_as("root", admin=True)
    response = await admin.get("/admin", headers={"Sec-Fetch-Mode": "navigate",
                                                  "Sec-Fetch-Dest": "document",
                                                  "Sec-Fetch-Site": "same-origin"})
    assert response.status_code == 200
    assert "mallory" in response.text
    assert "&lt;script&gt;" in response.text  # the event's data is shown, escaped
    for raw in ("<img", "<script>alert", "onerror=alert(1)>"):
        assert raw not in response.text, raw
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'none'" in csp or ("default-src 'none'" in csp
                                           and "script-src" not in csp)
