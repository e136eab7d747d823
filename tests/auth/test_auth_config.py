"""`[auth]` is validated like every section: unknown keys and bad values name the key."""

from __future__ import annotations

import pytest

from markco_trio.builtin.auth.options import AuthOptions
from markco_trio.builtin.auth.origin import allowed_origins, origin_of, same_origin_request
from markco_trio.errors import ConfigError
from markco_trio.options import parse_options


def parse(table: dict[str, object]) -> AuthOptions:
    return parse_options(AuthOptions, table, "markco.toml: [auth]")


def test_every_key_has_a_default() -> None:
    options = parse({})
    assert options.cookie_name == "markco_session" and options.login_link == "auto"
    assert options.session_ttl == 14 * 86400 and not options.invite_only


def test_an_unknown_key_is_named_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"\[auth\]: unknown key 'session_tll_days' "
                                          r"\(did you mean 'session_ttl_days'\?\)"):
        parse({"session_tll_days": 3})


@pytest.mark.parametrize(("table", "message"), [
    ({"session_ttl_days": 10, "session_max_days": 5}, "session_max_days"),
    ({"cookie_name": "__Host-x"}, "cookie_name"),
    ({"cookie_name": "a b"}, "cookie_name"),
    ({"admins": ["octocat"]}, "admins"),
    ({"trusted_origins": ["https://x.example/path"]}, "trusted_origins"),
    ({"login_link": "sometimes"}, "login_link"),
    ({"revocation_poll_seconds": 0}, "revocation_poll_seconds"),
    ({"invite_max_uses": 0}, "invite_max_uses"),
])
def test_bad_values_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(table)


def test_origins_are_compared_normalised() -> None:
    assert origin_of("HTTPS://Markco.Example:443/dashboard?x=1") == "https://markco.example"
    assert origin_of("http://127.0.0.1:3000") == "http://127.0.0.1:3000"
    assert origin_of("null") is None and origin_of("javascript:alert(1)") is None
    allowed = allowed_origins("https://markco.example/", ["http://localhost:8080"])
    assert same_origin_request("https://markco.example", None, allowed)
    assert same_origin_request(None, "http://localhost:8080/x", allowed)
    assert not same_origin_request("https://markco.example.evil.com", None, allowed)
    assert not same_origin_request(None, None, allowed)
    assert not same_origin_request("null", "https://markco.example/", allowed)
