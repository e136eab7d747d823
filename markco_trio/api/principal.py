"""Who is calling the API app: the `Principal` of the current request.

The auth plugin authenticates every request (session cookie or `Authorization: Bearer`) in a
`before_app_request` handler and stores the result with `set_principal`; routes read it with
`current_principal()`. Without an auth plugin every request is anonymous.
"""

from __future__ import annotations

from quart import g

from ..authz import Principal


def set_principal(principal: Principal | None) -> None:
    """Record who is calling (None: anonymous). Called by the auth plugin."""
    g.markco_principal = principal


def current_principal() -> Principal | None:
    """The caller of the current request, or None when anonymous."""
    return getattr(g, "markco_principal", None)
