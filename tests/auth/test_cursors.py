"""A paging cursor markco did not make is the client's mistake: 400, never a 500."""

from __future__ import annotations

import pytest

from .conftest import StartMarkco

MALFORMED = ["%%", "%", "!!", "YWxpY2U", "\u00e9"]


@pytest.mark.parametrize("cursor", MALFORMED)
async def test_a_malformed_cursor_on_the_admin_page_is_a_400_page(
        start_markco: StartMarkco, cursor: str) -> None:
    markco = await start_markco()
    admin = await markco.login_as("root", admin=True)
    page = await admin.get("/admin", params={"cursor": cursor})
    assert page.status_code == 400 and "page link is damaged" in page.text


async def test_a_literal_percent_cursor_on_the_admin_page_is_a_400_page(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    admin = await markco.login_as("root", admin=True)
    page = await admin.get("/admin?cursor=%%")  # not even valid percent-encoding
    assert page.status_code == 400


@pytest.mark.parametrize("cursor", MALFORMED)
async def test_a_malformed_cursor_on_the_users_api_is_a_400(
        start_markco: StartMarkco, cursor: str) -> None:
    markco = await start_markco()
    admin = await markco.login_as("root", admin=True)
    response = await admin.get("/api/v1/users", params={"cursor": cursor})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_cursor"
