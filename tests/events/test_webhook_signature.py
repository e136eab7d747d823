"""Signing and verifying webhook deliveries (`markco_trio.webhooks`): what a receiver accepts
and every way it refuses a forged, altered or replayed delivery."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from markco_trio.webhooks import (
    ReplayGuard,
    WebhookVerificationError,
    parse_header,
    sign,
    verify,
)

SECRET = "whsec-test"
BODY = b'{"id":"e1","type":"critical","data":{}}'
T = 1_764_885_600


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, T) == f"t={T},v1={expected}"


def test_a_delivery_signed_with_the_secret_verifies() -> None:
    assert verify(SECRET, BODY, sign(SECRET, BODY, T), now=T + 5) == T


def test_an_altered_body_is_refused() -> None:
    header = sign(SECRET, BODY, T)
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify(SECRET, BODY.replace(b"critical", b"idle-wake"), header, now=T)


def test_an_altered_timestamp_is_refused() -> None:
    _, (v1,) = parse_header(sign(SECRET, BODY, T))
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify(SECRET, BODY, f"t={T + 60},v1={v1}", now=T + 60)


def test_another_secret_is_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify("other-secret", BODY, sign(SECRET, BODY, T), now=T)


def test_a_delivery_older_than_the_tolerance_is_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(SECRET, BODY, sign(SECRET, BODY, T), now=T + 301, tolerance=300)


def test_a_delivery_from_the_future_beyond_the_tolerance_is_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(SECRET, BODY, sign(SECRET, BODY, T), now=T - 301, tolerance=300)


def test_the_same_delivery_twice_is_refused_by_the_replay_guard() -> None:
    guard = ReplayGuard()
    header = sign(SECRET, BODY, T)
    verify(SECRET, BODY, header, now=T, replay_guard=guard)
    with pytest.raises(WebhookVerificationError, match="replay"):
        verify(SECRET, BODY, header, now=T + 1, replay_guard=guard)


def test_the_replay_guard_forgets_signatures_past_the_window() -> None:
    guard = ReplayGuard()
    guard.check_and_remember("a", now=0, window=10)
    guard.check_and_remember("b", now=11, window=10)  # "a" expired and was dropped
    assert list(guard._seen) == ["b"]


def test_any_of_several_signatures_may_match_during_a_secret_rotation() -> None:
    _, (new,) = parse_header(sign(SECRET, BODY, T))
    header = f"t={T},v1={'0' * 64},v1={new}"
    assert verify(SECRET, BODY, header, now=T) == T


@pytest.mark.parametrize("header, reason", [
    (None, "missing"),
    ("", "missing"),
    ("v1=abc", "no t="),
    (f"t={T}", "no v1="),
    (f"t=soon,v1={'0' * 64}", "POSIX"),
    (f"t={T},t={T},v1={'0' * 64}", "POSIX"),
    ("garbage", "malformed"),
])
def test_a_malformed_header_is_refused_naming_the_problem(header: str | None,
                                                          reason: str) -> None:
    with pytest.raises(WebhookVerificationError, match=reason):
        verify(SECRET, BODY, header, now=T)
