"""Building the quart-trio API app from the plugins' blueprints."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from .. import __version__
from ..storage.failures import InvalidCursor
from .conventions import ApiError, error_response

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

    @app.get("/api/v1")
    async def _about() -> dict[str, object]:
        return {"name": "markco", "version": __version__,
                "public_url": ctx.config.server.public_url}

    for blueprints in ctx.plugins.hook.markco_web_routes(ctx=ctx):
        for bp in blueprints or ():
            app.register_blueprint(bp)
    return app
