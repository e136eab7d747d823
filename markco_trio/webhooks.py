"""Signing markco's webhook deliveries, and checking them on the receiving side.

markco POSTs each event as JSON to every webhook configured for its type (`[webhooks]`, the
built-in `events` plugin) and signs it the way GitHub and Stripe do: HMAC-SHA256 over
`<timestamp>.<body>` with the webhook's shared secret, sent as

    Markco-Signature: t=1764885600,v1=5257a869e7ec...(64 hex digits)

`t` is the POSIX second the attempt was signed (each retry is signed afresh), `v1` the hex
HMAC. A receiver (a plugin author's service, a test) checks it with `verify`:

    from markco_trio.webhooks import ReplayGuard, WebhookVerificationError, verify

    guard = ReplayGuard()                      # one per receiver, kept between requests

    def receive(headers, body: bytes) -> None:
        try:
            verify(SECRET, body, headers["Markco-Signature"], replay_guard=guard)
        except WebhookVerificationError as exc:
            ...answer 400, naming str(exc)...
        event = json.loads(body)               # now trusted

`verify` rejects a body or timestamp that was altered (the HMAC no longer matches), a
signature older or newer than `tolerance` seconds (a replay of an old delivery), and, given a
`ReplayGuard`, the same signature seen twice within the tolerance (a replay of a recent one).
Several `v1=` values are accepted (a secret being rotated): any match is enough.

Receivers should still treat deliveries as at-least-once: a retry after a lost answer carries
the same event `id` with a new signature, so de-duplicate by the event's `id`.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Markco-Signature"
EVENT_HEADER = "Markco-Event"
EVENT_ID_HEADER = "Markco-Event-Id"
DELIVERY_HEADER = "Markco-Delivery"
DEFAULT_TOLERANCE = 300.0
_SCHEME = "v1"


class WebhookVerificationError(ValueError):
    """A delivery that must be refused; the message says why."""


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def signature(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`."""
    message = str(int(timestamp)).encode() + b"." + body
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The value of the `Markco-Signature` header for `body` signed at `timestamp`."""
    return f"t={int(timestamp)},{_SCHEME}={signature(secret, body, timestamp)}"


def parse_header(header: str) -> tuple[int, list[str]]:
    """(timestamp, v1 signatures) from a `Markco-Signature` header; unknown schemes are
    ignored. `WebhookVerificationError` when it is malformed."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise WebhookVerificationError(f"malformed {SIGNATURE_HEADER} header: {header!r}")
        if key == "t":
            # ASCII digits, a sane length: isdigit() alone lets '²' or 5000 digits through
            # to int(), whose ValueError is not a WebhookVerificationError.
            if (not (value.isascii() and value.isdigit() and len(value) <= 12)
                    or timestamp is not None):
                raise WebhookVerificationError(
                    f"{SIGNATURE_HEADER}: t must be one POSIX timestamp, got {value!r}")
            timestamp = int(value)
        elif key == _SCHEME:
            if not value.isascii():  # hmac.compare_digest raises TypeError on such a str
                raise WebhookVerificationError(f"{SIGNATURE_HEADER}: a signature is hex")
            signatures.append(value)
    if timestamp is None:
        raise WebhookVerificationError(f"{SIGNATURE_HEADER} has no t= timestamp")
    if not signatures:
        raise WebhookVerificationError(f"{SIGNATURE_HEADER} has no {_SCHEME}= signature")
    return timestamp, signatures


class ReplayGuard:
    """Remembers the signatures verified within the tolerance window, so the same delivery
    presented twice is refused. Memory is bounded by what arrives within one window."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def check_and_remember(self, signature_value: str, *, now: float, window: float) -> None:
        """Refuse a signature seen before (within `window`); remember this one."""
        for key, expires in list(self._seen.items()):
            if expires < now:
                del self._seen[key]
        if signature_value in self._seen:
            raise WebhookVerificationError("this delivery was already received (a replay)")
        self._seen[signature_value] = now + window


def verify(secret: str | bytes, body: bytes, header: str | None, *,
           tolerance: float = DEFAULT_TOLERANCE, now: float | None = None,
           replay_guard: ReplayGuard | None = None) -> int:
    """Check a delivery: the body is exactly what markco signed, with `secret`, less than
    `tolerance` seconds ago (or ahead: clocks drift both ways), and — with a `replay_guard` —
    not seen before. Return the signed timestamp; raise `WebhookVerificationError` naming
    what is wrong otherwise. `now` defaults to the system clock."""
    if not header:
        raise WebhookVerificationError(f"the {SIGNATURE_HEADER} header is missing")
    timestamp, candidates = parse_header(header)
    expected = signature(secret, body, timestamp)
    match = next((c for c in candidates if hmac.compare_digest(c, expected)), None)
    if match is None:
        raise WebhookVerificationError(
            "the signature does not match: the body or timestamp was altered, or the secret "
            "differs from the webhook's")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"the signature is {abs(current - timestamp):.0f} s from now, beyond the "
            f"{tolerance:g} s tolerance (a replayed delivery, or a wrong clock)")
    if replay_guard is not None:
        replay_guard.check_and_remember(match, now=current, window=2 * tolerance)
    return timestamp


__all__ = ["DEFAULT_TOLERANCE", "DELIVERY_HEADER", "EVENT_HEADER", "EVENT_ID_HEADER",
           "ReplayGuard", "SIGNATURE_HEADER", "WebhookVerificationError", "parse_header",
           "sign", "signature", "verify"]
