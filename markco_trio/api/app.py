"""Building the quart-trio API app from the plugins' blueprints."""

from __future__ import annotations

import logging
from html import escape
from typing import TYPE_CHECKING

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from .. import __version__
from ..storage.failures import InvalidCursor, StorageUnavailable
from .conventions import ApiError, error_response
from .openapi import openapi_blueprint

if TYPE_CHECKING:
    from ..context import PluginContext

log = logging.getLogger("markco.api")


def build_app(ctx: PluginContext) -> QuartTrio:
    """The API app: conventional JSON errors, `/api/v1` metadata, then every blueprint that a
    plugin returns from `markco_web_routes`."""
    app = QuartTrio("markco", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024 * 1024
    app.extensions["markco"] = ctx

    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(InvalidCursor)
    async def _bad_cursor(exc: InvalidCursor) -> Response:
        # Whichever route passed a client's cursor on: the client's mistake, never a 500.
        return error_response(400, "bad_cursor", str(exc))

    @app.errorhandler(StorageUnavailable)
    async def _storage_unavailable(exc: StorageUnavailable) -> Response:
        # The operator's problem, not a bug: one log line (no traceback), a 503 naming the
        # cause, and /readyz reports it until storage takes writes again (daemon's probe).
        log.error("storage unavailable on %s %s (request %s): %s", request.method,
                  request.path, request.headers.get("X-Request-Id", "-"), exc)
        if ctx.readiness is not None:
            ctx.readiness.mark("storage", False, reason=exc.cause)
        message = (f"markco cannot save anything right now: {exc.cause}. The operator has "
                   "been told (the server's log); try again in a while.")
        if request.path.startswith("/api/"):
            response = error_response(503, "storage_unavailable", message)
        else:
            response = Response(
                "<!doctype html><meta charset=\"utf-8\"><title>Unavailable · markco</title>"
                f"<h1>markco is unavailable</h1><p>{escape(message)}</p>", status=503,
                content_type="text/html; charset=utf-8")
        response.headers["Retry-After"] = "30"
        return response

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name or "error")

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        # Never a traceback to the client; the log has it, keyed by the request id.
        log.error("unhandled error on %s %s (request %s)", request.method, request.path,
                  request.headers.get("X-Request-Id", "-"), exc_info=exc)
        return error_response(500, "internal_error",
                              "something went wrong on our side; the log has the details")

    @app.before_request
    async def _json_is_utf8() -> Response | None:
        # quart decodes a JSON body before `get_json(silent=True)` can shield the route, so
        # bytes that are not UTF-8 would be a 500 (found by schemathesis): a 400 instead.
        if request.path.startswith("/api/") and request.is_json:
            raw = await request.get_data(cache=True, as_text=False)
            try:
                if isinstance(raw, bytes):
                    raw.decode("utf-8")
            except UnicodeDecodeError:
                return error_response(400, "bad_body", "the body is not UTF-8: send JSON "
                                      "(Content-Type: application/json)")
        return None

    @app.get("/api/v1")
    async def _about() -> dict[str, object]:
        return {"name": "markco", "version": __version__,
                "public_url": ctx.config.server.public_url}

    for blueprints in ctx.plugins.hook.markco_web_routes(ctx=ctx):
        for bp in blueprints or ():
            app.register_blueprint(bp)
    # GET /api/v1/openapi.json: the description of the routes registered above.
    app.register_blueprint(openapi_blueprint(app, public_url=ctx.config.server.public_url))
    return app
