"""The browser's GitHub login against the fake GitHub, over real HTTP, hop by hop."""

from __future__ import annotations

from urllib.parse import urlsplit

from markco_trio.testing.fake_github import FakeGitHub
from markco_trio.testing.oauth_kit import s256

from .conftest import StartMarkco, query, set_cookies


async def test_github_login_sets_a_session_cookie_and_the_dashboard_shows_the_user(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github)
    browser = markco.client()

    login_page = await browser.get("/login")
    assert login_page.status_code == 200
    assert 'href="/login/github"' in login_page.text

    to_github = await browser.get("/login/github")
    assert to_github.status_code == 302
    authorize = to_github.headers["location"]
    assert authorize.startswith(fake_github.authorize_url)
    params = query(authorize)
    assert params["redirect_uri"] == f"{markco.url}/auth/callback/github"
    assert params["scope"] == "read:user user:email"
    assert params["code_challenge_method"] == "S256" and len(params["state"]) >= 32
    assert "markco_login" in set_cookies(to_github)

    consent = await browser.get(authorize)
    assert consent.status_code == 302
    callback = consent.headers["location"]
    assert callback.startswith(f"{markco.url}/auth/callback/github?")
    assert query(callback)["state"] == params["state"]

    logged_in = await browser.get(callback)
    assert logged_in.status_code == 303
    assert logged_in.headers["location"] == f"{markco.url}/dashboard"
    assert "markco_session" in set_cookies(logged_in)

    dashboard = await browser.get(urlsplit(logged_in.headers["location"]).path)
    assert dashboard.status_code == 200
    assert "@octocat" in dashboard.text and "The Octocat" in dashboard.text
    # The verifier the fake checked is the one whose challenge went to GitHub.
    token_request = fake_github.seen("/login/oauth/access_token")[-1]
    assert s256(token_request.params["code_verifier"]) == params["code_challenge"]
    assert [e.type for e in await markco.events("auth.login")] == ["auth.login"]
    assert len(await markco.events("user.created")) == 1


async def test_session_cookie_is_httponly_lax_and_path_root(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github)
    callback = await markco.github_login()
    cookie = set_cookies(callback)["markco_session"]
    attributes = [a.strip().lower() for a in cookie.split(";")[1:]]
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "path=/" in attributes
    assert "secure" not in attributes  # the public URL is http here
    assert not any(a.startswith("domain=") for a in attributes)
    token = cookie.split(";")[0].split("=", 1)[1]
    assert len(token) == 43  # 256 random bits, base64url


async def test_callback_without_the_login_cookie_is_refused(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github)
    victim, attacker = markco.client(), markco.client()
    to_github = await attacker.get("/login/github")
    consent = await attacker.get(to_github.headers["location"])
    # Login CSRF: the attacker's callback URL opened in the victim's browser.
    page = await victim.get(consent.headers["location"])
    assert page.status_code == 400
    assert "Start the login again" in page.text
    assert "markco_session" not in set_cookies(page)


async def test_callback_with_a_wrong_state_is_refused(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github)
    browser = markco.client()
    to_github = await browser.get("/login/github")
    consent = await browser.get(to_github.headers["location"])
    params = query(consent.headers["location"])
    page = await browser.get("/auth/callback/github",
                             params={"code": params["code"], "state": "x" * 43})
    assert page.status_code == 400
    assert "state is missing or wrong" in page.text
    assert "markco_session" not in set_cookies(page)


async def test_callback_without_state_is_refused(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github)
    browser = markco.client()
    to_github = await browser.get("/login/github")
    consent = await browser.get(to_github.headers["location"])
    page = await browser.get("/auth/callback/github",
                             params={"code": query(consent.headers["location"])["code"]})
    assert page.status_code == 400
    assert "markco_session" not in set_cookies(page)


async def test_a_callback_works_only_once(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github)
    browser = markco.client()
    to_github = await browser.get("/login/github")
    consent = await browser.get(to_github.headers["location"])
    pending_cookie = browser.cookies.get("markco_login")
    first = await browser.get(consent.headers["location"])
    assert first.status_code == 303
    replay = markco.client()
    replay.cookies.set("markco_login", pending_cookie or "")
    again = await replay.get(consent.headers["location"])
    assert again.status_code == 400
    assert "markco_session" not in set_cookies(again)


async def test_a_replayed_code_is_refused_by_github(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github)
    browser = markco.client()
    assert (await markco.github_login(browser)).status_code == 303
    old_code = fake_github.seen("/login/oauth/access_token")[-1].params["code"]
    # A fresh login attempt (its own state and verifier) fed the already-exchanged code.
    fresh = await browser.get("/login/github")
    fresh_state = query(fresh.headers["location"])["state"]
    page = await browser.get("/auth/callback/github",
                             params={"code": old_code, "state": fresh_state})
    assert page.status_code == 403
    assert "did not accept the login code" in page.text


async def test_a_code_issued_for_another_login_fails_pkce(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github)
    victim, attacker = markco.client(), markco.client()
    victim_state = query((await victim.get("/login/github")).headers["location"])["state"]
    attacker_redirect = (await attacker.get("/login/github")).headers["location"]
    attacker_code = query((await attacker.get(attacker_redirect)).headers["location"])["code"]
    # Code injection: the attacker's code (bound to the attacker's PKCE challenge) delivered
    # to the victim's callback with the victim's state. The victim's verifier does not match.
    page = await victim.get("/auth/callback/github",
                            params={"code": attacker_code, "state": victim_state})
    assert page.status_code == 403
    assert "markco_session" not in set_cookies(page)
    assert fake_github.seen("/user") == []


async def test_unverified_primary_email_is_refused(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    fake_github.add_user("unverified", email="unverified@example.com", email_verified=False)
    fake_github.consent_as("unverified")
    markco = await start_markco(github=fake_github)
    page = await markco.github_login()
    assert page.status_code == 403
    assert "primary email address on GitHub is not verified" in page.text
    assert await markco.storage.get_user_by_username("unverified") is None


async def test_github_down_shows_a_clear_page(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github)
    browser = markco.client()
    to_github = await browser.get("/login/github")
    consent = await browser.get(to_github.headers["location"])
    fake_github.set_failure("down")
    page = await browser.get(consent.headers["location"])
    assert page.status_code == 502
    assert "text/html" in page.headers["content-type"]
    assert "GitHub is not available right now" in page.text


async def test_github_unreachable_shows_a_clear_page(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github)
    browser = markco.client()
    to_github = await browser.get("/login/github")
    consent = await browser.get(to_github.headers["location"])
    await fake_github.stop()
    page = await browser.get(consent.headers["location"])
    assert page.status_code == 502
    assert "Could not reach GitHub" in page.text


async def test_denied_consent_shows_a_clear_page(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    fake_github.consent_as(None)
    markco = await start_markco(github=fake_github)
    page = await markco.github_login()
    assert page.status_code == 403
    assert "cancelled on GitHub" in page.text
    assert "markco_session" not in set_cookies(page)


async def test_user_outside_the_allow_list_is_refused(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github,
                                github_options='allowed_users = ["someone-else"]\n')
    page = await markco.github_login()
    assert page.status_code == 403
    assert "@octocat is not allowed to log in here" in page.text


async def test_allowed_user_logs_in_whatever_the_case(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github, github_options='allowed_users = ["OctoCat"]\n')
    assert (await markco.github_login()).status_code == 303


async def test_org_allow_list_asks_for_read_org_and_admits_members(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    fake_github.users["octocat"].orgs.add("acme")
    markco = await start_markco(github=fake_github, github_options='allowed_orgs = ["acme"]\n')
    browser = markco.client()
    to_github = await browser.get("/login/github")
    assert query(to_github.headers["location"])["scope"] == "read:user user:email read:org"
    consent = await browser.get(to_github.headers["location"])
    assert (await browser.get(consent.headers["location"])).status_code == 303


async def test_org_allow_list_refuses_non_members(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github, github_options='allowed_orgs = ["acme"]\n')
    page = await markco.github_login()
    assert page.status_code == 403
    assert "not allowed to log in here" in page.text


async def test_unknown_provider_is_a_404_page(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github)
    page = await markco.client().get("/login/gitlab")
    assert page.status_code == 404
    assert "no login provider named" in page.text
