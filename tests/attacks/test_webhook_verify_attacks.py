"""Attacks on a webhook receiver that uses `markco_trio.webhooks.verify`: whatever a hostile
sender puts in `Markco-Signature`, verification fails with `WebhookVerificationError` (which a
receiver turns into a 400), never with another exception (a 500, or a crashed receiver)."""

from __future__ import annotations

import pytest

from markco_trio.webhooks import WebhookVerificationError, sign, verify

SECRET = "whsec-attacks"
BODY = b'{"type":"critical"}'
NOW = 1_800_000_000


@pytest.mark.parametrize("header", [
    "t=²,v1=00",                       # str.isdigit accepts it, int() does not
    "t=١٢٣,v1=00",                     # Arabic-Indic digits
    "t=" + "9" * 5000 + ",v1=00",      # more digits than int() converts
    "t=" + "9" * 400 + ",v1=00",       # an int too large for a float
    f"t={NOW},v1=é",                   # compare_digest refuses non-ASCII str
    f"t={NOW},v1=\x00\x00",
    "t=,v1=00", "v1=00", "t=1", "=", ",,,", "t=1,t=2,v1=00",
])
def test_a_malformed_signature_header_is_a_verification_error(header: str) -> None:
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, BODY, header, now=NOW)


def test_a_well_formed_signature_still_verifies() -> None:
    assert verify(SECRET, BODY, sign(SECRET, BODY, NOW), now=NOW) == NOW
