"""The HTTP face of the publish plugin: a Quart blueprint serving `/@...`.

Thin on purpose: parse the raw path (`request_path`), ask the publisher, answer with the right
headers (`headers`), 304 when the client's copy is current (`conditional`). HEAD is answered
like GET without the body; every other method gets 405. With `publish.host` set, `/@...` is
served only on that host (elsewhere it redirects there) and that host serves nothing else.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from quart import Blueprint, Response, request

from ...api.principal import current_principal
from ...context import PluginContext
from ...errors import ConfigError
from ...records import User
from . import headers as h
from .conditional import not_modified
from .fsml import join_url
from .options import PublishOptions
from .page import NOT_FOUND_PAGE
from .publisher import Located, Publisher
from .request_path import parse_publish_path

# Methods routed to the view so that it, not the app's JSON error handler, answers the 405.
_ROUTED_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Where the dashboard finds the publisher (`Publisher.projects_of`).


def _not_found() -> Response:
    return Response(NOT_FOUND_PAGE, status=404, headers=h.not_found_headers())


def _raw_path() -> str | None:
    """The request path as the client sent it (percent-encoded), so that `%2F` stays data."""
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes) and raw:
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            return None  # a raw non-ASCII byte in a request target: not a URL we made
    return quote(request.path, safe="/@!$&'()*+,;=:~")


def _headers_for(located: Located) -> dict[str, str]:
    if located.media is not None:
        headers = h.asset_headers(located.media, located.filename, public=located.public)
    else:
        headers = h.page_headers(public=located.public)
    headers.update(h.validators(located.etag, located.last_modified))
    return headers


def _respond(located: Located, body: bytes) -> Response:
    return Response(body, status=200, headers=_headers_for(located))


def _respond_head(located: Located, length: int) -> Response:
    """GET's headers, Content-Length included, and no body."""
    response = Response(b"", status=200, headers=_headers_for(located))
    response.content_length = length
    return response


def _not_modified(located: Located) -> Response:
    response = Response(b"", status=304, headers=_headers_for(located))
    del response.headers["Content-Length"]  # a 304 has no body; the length is not "0"
    return response


def _to_canonical(raw: str, username: str, project: str) -> Response:
    """Redirect a project named in another case (`/@Alice/NOTES/x`) to its folder's own
    name (`/@alice/Notes/x`), keeping the rest of the raw path and the query. Temporary and
    not stored: the folder may be renamed, or another one created in the asked-for case."""
    rest = raw[1:].split("/")[2:]
    location = "/".join([join_url(f"/@{username}", [project]), *rest])
    query = request.scope.get("query_string", b"")
    if query:
        location += "?" + query.decode("ascii", "replace")
    return Response(b"", status=302, headers={
        "Location": location, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff"})


def make_publisher(ctx: PluginContext, options: PublishOptions) -> Publisher:
    """A publisher reading users from `ctx.storage` (at request time: storage is entered
    before blueprints are built, but looked up lazily all the same) and asking `ctx.authorize`."""

    async def find_user(username: str) -> User | None:
        return await ctx.require_storage().get_user_by_username(username)

    return Publisher(data_dir=ctx.data_dir, find_user=find_user, authorize=ctx.authorize,
                     options=options, log=ctx.log.getChild("publish"))


def make_blueprint(ctx: PluginContext, options: PublishOptions,
                   publisher: Publisher | None = None) -> Blueprint:
    """The publish blueprint, serving projects under `ctx.data_dir` with `options`; pass
    `publisher` to share one (tests read its statistics)."""
    publisher = publisher or make_publisher(ctx, options)
    ctx.publisher = publisher
    bp = Blueprint("publish", __name__)

    if options.host:
        _separate_origin(bp, ctx, options)

    async def serve(rest: str = "") -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(b"Only GET and HEAD are served here.\n", status=405,
                            headers={**h.method_not_allowed_headers(),
                                     "Content-Type": "text/plain; charset=utf-8"})
        raw = _raw_path()
        target = parse_publish_path(raw) if raw is not None else None
        if target is None:
            return _not_found()
        located = await publisher.locate(target, current_principal())
        if located is None:
            canonical = await publisher.canonical_project(target, current_principal())
            if canonical is not None and raw is not None:
                return _to_canonical(raw, target.username, canonical)
            return _not_found()
        if not_modified(etag=located.etag, last_modified=located.last_modified,
                        if_none_match=request.headers.get("If-None-Match"),
                        if_modified_since=request.headers.get("If-Modified-Since")):
            return _not_modified(located)
        head = request.method == "HEAD"
        if head and located.size is not None:
            return _respond_head(located, located.size)  # an asset: no need to read it
        body = await located.produce()
        if body is None:
            return _not_found()
        return _respond_head(located, len(body)) if head else _respond(located, body)

    bp.add_url_rule("/@", "root", serve, methods=_ROUTED_METHODS, merge_slashes=False)
    bp.add_url_rule("/@<path:rest>", "publish", serve, methods=_ROUTED_METHODS,
                    merge_slashes=False, strict_slashes=False)
    return bp


def _separate_origin(bp: Blueprint, ctx: PluginContext, options: PublishOptions) -> None:
    """Keep pages and the rest of the app on different hosts (see `PublishOptions.host`)."""
    main = urlsplit(ctx.config.server.public_url)
    scheme, pages_host = options.origin_parts(default_scheme=main.scheme or "https")
    if pages_host == main.netloc.lower():
        raise ConfigError(
            f"{ctx.config.path}: [publish]: host: {options.host!r} is the main host of "
            f"[server] public_url; "
            f"give published pages a host of their own (ideally another registrable domain), "
            f"or leave host empty to serve them on the main origin")

    @bp.before_app_request
    async def _pages_host_only() -> Response | None:
        on_pages_host = request.host.lower() == pages_host
        is_publish_path = request.path.startswith("/@")
        if on_pages_host and not is_publish_path:
            return _not_found()  # the pages origin carries no login, dashboard or API
        if is_publish_path and not on_pages_host:
            raw = _raw_path() or "/"
            query = request.scope.get("query_string", b"")
            location = f"{scheme}://{pages_host}{raw}"
            if query:
                location += "?" + query.decode("ascii", "replace")
            return Response(b"", status=307, headers={
                "Location": location, "Cache-Control": "no-cache",
                "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"})
        return None
