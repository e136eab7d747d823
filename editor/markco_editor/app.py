"""The editor's HTTP and WebSocket API: routing and handlers over the services `server` wires.

Routes (all relative to the `BASE_PATH` markco strips):

    GET  /health                 200 {"status": "ok", ...}: markco's readiness check
    GET  /                       the page
    GET  /static/<name>          its script and stylesheet
    GET  /api/files              {"files": [entry...], "truncated": bool}
    POST /api/files              {"path", "content"?} -> 201 entry; 409 `exists`
    GET  /api/files/<path>       entry + {"content"}
    PUT  /api/files/<path>       {"content", "baseVersion"?} -> entry (201 if created);
                                 409 `conflict` if the file is no longer at baseVersion
    POST /api/execute            {"code", "execId"?} -> text/event-stream of the execution
    POST /api/interrupt          {"interrupted": bool}
    GET  /api/notice             {"notice": text|null, "id": str|null}: what compute has to
                                 tell the user (from the runtime front; never wakes the runtime)
    WS   /ws                     notifications (files, executions) and commands

The mrmd editor (the default; see `mrmd_ui`, `bridge`, `sync` and static/mrmd-shim.js):

    GET  /                       the mrmd UI's page (the basic page with MARKCO_EDITOR=basic
                                 or when the UI cache is missing); GET /basic: the basic page
    GET  /ui/<path>              the UI's files (bundle, fonts, icons, xterm)
    POST /api/bridge             {"call", "args"} -> {"value"} or {"error": {"code", "message",
                                 "status"}}: window.electronAPI, server side
    POST /api/activity           204: the page saw the user type or click; reported to the runtime
                                 front (POST /markco/v1/activity), and a non-GET request is
                                 activity for the proxy too (typing travels over the sync
                                 WebSocket, which markco does not count)
    GET  /files/<path>           a file's bytes (images the notebooks show), sandboxed
    *    /mrp/v1/<path>          forwarded to this editor's own runtime front, nowhere else
    WS   /sync/<folder>/<name>   the Yjs document of <folder>/<name>.md (y-websocket)

An entry is {"path", "size", "mtime", "version"}. Errors are
`{"error": {"code", "message"}}` with a 4xx/5xx status.

Before any route: a Host that is not markco's public host or a loopback name is 421, and a
state-changing request or WebSocket from another origin (Origin, Sec-Fetch-Site) is 403 (see
`guard`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import MutableMapping
from functools import partial
from typing import Any

import httpx
import trio

from markco_editor.asgi import (
    ASGIReceive,
    ASGISend,
    EventStream,
    HTTPError,
    Request,
    Scope,
    WebSocket,
    send_bytes,
    send_error,
    send_json,
)
from markco_editor.bridge import Bridge, BridgeError
from markco_editor.executor import MAX_CODE_BYTES, ExecutionRefused, Executor, new_exec_id
from markco_editor.guard import HostAndOrigin
from markco_editor.hub import Hub, Message, Subscription
from markco_editor.mrmd_ui import CONTENT_SECURITY_POLICY as MRMD_CSP
from markco_editor.mrmd_ui import MrmdUI, UIUnavailable
from markco_editor.page import CONTENT_SECURITY_POLICY, PageRenderer, StaticAsset
from markco_editor.runtime import RuntimeUnavailable
from markco_editor.settings import EditorSettings
from markco_editor.sync import DocumentSync
from markco_editor.watcher import FileWatcher
from markco_editor.workspace import MAX_FILE_BYTES, Workspace, WorkspaceError

__all__ = ["EditorApp"]

log = logging.getLogger(__name__)

# JSON escaping can inflate text (control characters become \u00XX): leave room for it.
_MAX_SAVE_BODY = 2 * MAX_FILE_BYTES + 4096
_MAX_EXECUTE_BODY = 2 * MAX_CODE_BYTES + 4096
_SSE_KEEPALIVE_SECONDS = 15.0
_HELLO_WAIT_SECONDS = 2.0
_FILES_PREFIX = "/api/files/"
_MAX_BRIDGE_BODY = 4 * MAX_FILE_BYTES + 4096  # asset bytes travel as a JSON list
_MAX_MRP_BODY = 2 * MAX_CODE_BYTES + 4096
_RAW_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
              "gif": "image/gif", "webp": "image/webp", "svg": "image/svg+xml",
              "pdf": "application/pdf", "md": "text/plain; charset=utf-8",
              "txt": "text/plain; charset=utf-8", "csv": "text/plain; charset=utf-8"}


class EditorApp:
    """The ASGI application: one instance per editor process."""

    def __init__(
        self,
        settings: EditorSettings,
        workspace: Workspace,
        hub: Hub,
        executor: Executor,
        watcher: FileWatcher,
        renderer: PageRenderer,
        assets: dict[str, StaticAsset],
        sync: DocumentSync | None = None,
    ) -> None:
        self._settings = settings
        self._workspace = workspace
        self._hub = hub
        self._executor = executor
        self._watcher = watcher
        self._renderer = renderer
        self._assets = assets
        # Saves run check-then-write in a thread; one at a time so two cannot both pass the
        # version check.
        self._write_lock = trio.Lock()
        self._guard = HostAndOrigin(settings.public_url)
        self._sync = sync if sync is not None else DocumentSync(workspace)
        owner = settings.owner
        self._bridge = Bridge(workspace, runtime_configured=settings.runtime_configured,
                              owner={"name": owner.display_name, "email": owner.email},
                              on_saved=self._note_saved_path)
        self._ui = (MrmdUI(settings.ui_dir, settings.base_path)
                    if settings.ui == "mrmd" and settings.ui_dir is not None else None)

    def _note_saved_path(self, path: str) -> None:
        # Called in the bridge's worker thread: the hub lives in trio's.
        with contextlib.suppress(WorkspaceError, OSError):
            entry, _ = self._workspace.read(path)
            trio.from_thread.run_sync(
                partial(self._watcher.note_saved, entry, created=False, by=None))

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        """The ASGI entry point. Every request and WebSocket first passes the Host and Origin
        checks (`guard`): web pages of other sites are refused."""
        if scope["type"] == "http":
            request = Request(scope, receive)
            refused = self._guard.refusal(request.method, request.headers, websocket=False)
            if refused is not None:
                await send_error(send, HTTPError(*refused))
                return
            await self._http(request, send)
        elif scope["type"] == "websocket":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in scope["headers"]}
            if self._guard.refusal("GET", headers, websocket=True) is not None:
                await send({"type": "websocket.close", "code": 1008})  # before accept: a 403
                return
            await self._websocket(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)

    # -- HTTP --------------------------------------------------------------------------------

    async def _http(self, request: Request, send: ASGISend) -> None:
        started = False

        async def tracked(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._route(request, tracked)
        except HTTPError as exc:
            await send_error(send, exc)
        except (WorkspaceError, ExecutionRefused) as exc:
            await send_error(send, HTTPError(exc.status, exc.code, exc.message))
        except Exception as exc:
            # Never a bare 500: the page shows `message`, the log has the traceback.
            log.exception("%s %s failed", request.method, request.path)
            if not started:
                await send_error(send, HTTPError(
                    500, "internal_error", f"the editor failed to handle this request "
                    f"({type(exc).__name__}: {exc}); try again, and tell your administrator "
                    "if it keeps happening"))

    async def _route(self, request: Request, send: ASGISend) -> None:
        path, method = request.path, request.method
        head_only = method == "HEAD"
        if path == "/health":
            _allow(method, "GET", "HEAD")
            await send_json(send, 200, self._health(), head_only=head_only)
        elif path == "/" and self._ui is not None:
            _allow(method, "GET", "HEAD")
            await self._mrmd_page(send, head_only=head_only)
        elif path in ("/", "/basic"):
            _allow(method, "GET", "HEAD")
            await self._page(request, send, head_only=head_only)
        elif path.startswith("/ui/") and self._ui is not None:
            _allow(method, "GET", "HEAD")
            await self._ui_file(request, send, path.removeprefix("/ui/"), head_only)
        elif path == "/api/bridge":
            _allow(method, "POST")
            await self._bridge_call(request, send)
        elif path == "/api/activity":
            _allow(method, "POST")
            await request.body(1024)
            await self._activity()
            await send_bytes(send, 204, b"", "text/plain")
        elif path.startswith("/files/"):
            _allow(method, "GET", "HEAD")
            await self._raw_file(send, path.removeprefix("/files/"), head_only)
        elif path.startswith("/mrp/v1/"):
            _allow(method, "GET", "POST")
            await self._mrp(request, send)
        elif path.startswith("/static/"):
            _allow(method, "GET", "HEAD")
            await self._static(request, send, path.removeprefix("/static/"), head_only)
        elif path == "/api/files":
            _allow(method, "GET", "POST")
            if method == "GET":
                await self._list(send)
            else:
                await self._create(request, send)
        elif path.startswith(_FILES_PREFIX):
            _allow(method, "GET", "PUT")
            rel = path.removeprefix(_FILES_PREFIX)
            if method == "GET":
                await self._read(send, rel)
            else:
                await self._save(request, send, rel)
        elif path == "/api/execute":
            _allow(method, "POST")
            await self._execute(request, send)
        elif path == "/api/interrupt":
            _allow(method, "POST")
            await self._interrupt(send)
        elif path == "/api/notice":
            _allow(method, "GET")
            await self._notice(send)
        else:
            raise HTTPError(404, "not_found", f"nothing at {path!r}")

    def _health(self) -> dict[str, Any]:
        # Never touches the runtime: a health check must not wake a sleeping one.
        return {
            "status": "ok",
            "service": "markco-editor",
            "runtimeConfigured": self._settings.runtime_configured,
        }

    async def _page(self, request: Request, send: ASGISend, *, head_only: bool) -> None:
        listing = await trio.to_thread.run_sync(self._workspace.list_markdown)
        body = self._renderer.render(
            visitor=request.header("x-markco-user"),
            role=request.header("x-markco-role"),
            listing=listing,
        )
        headers = (
            ("content-security-policy", CONTENT_SECURITY_POLICY),
            ("cache-control", "no-store"),
        )
        await send_bytes(
            send, 200, body, "text/html; charset=utf-8", headers, head_only=head_only
        )

    async def _static(self, request: Request, send: ASGISend, name: str, head_only: bool) -> None:
        asset = self._assets.get(name)
        if asset is None:
            raise HTTPError(404, "not_found", f"no static file {name!r}")
        # Revalidated on each load (cheap with the ETag), so an upgrade is seen at once.
        headers = (("etag", asset.etag), ("cache-control", "no-cache"))
        if request.header("if-none-match") == asset.etag:
            await send_bytes(send, 304, b"", asset.content_type, headers, head_only=True)
            return
        await send_bytes(send, 200, asset.body, asset.content_type, headers, head_only=head_only)

    async def _list(self, send: ASGISend) -> None:
        listing = await trio.to_thread.run_sync(self._workspace.list_markdown)
        await send_json(
            send,
            200,
            {"files": [e.to_json() for e in listing.files], "truncated": listing.truncated},
        )

    async def _read(self, send: ASGISend, path: str) -> None:
        entry, text = await trio.to_thread.run_sync(self._workspace.read, path)
        await send_json(send, 200, {**entry.to_json(), "content": text}, _etag(entry.version))

    async def _save(self, request: Request, send: ASGISend, path: str) -> None:
        body = await request.json(_MAX_SAVE_BODY)
        content = body.get("content")
        base_version = body.get("baseVersion")
        if not isinstance(content, str):
            raise HTTPError(400, "bad_request", "`content` must be a string")
        if base_version is not None and not isinstance(base_version, str):
            raise HTTPError(400, "bad_request", "`baseVersion` must be a string or null")
        async with self._write_lock:
            entry, created = await trio.to_thread.run_sync(
                partial(self._workspace.write, path, content, base_version=base_version)
            )
        self._watcher.note_saved(entry, created=created, by=request.header("x-markco-user"))
        await send_json(send, 201 if created else 200, entry.to_json(), _etag(entry.version))

    async def _create(self, request: Request, send: ASGISend) -> None:
        body = await request.json(_MAX_SAVE_BODY)
        path, content = body.get("path"), body.get("content", "")
        if not isinstance(path, str):
            raise HTTPError(400, "bad_request", "`path` must be a string")
        if not isinstance(content, str):
            raise HTTPError(400, "bad_request", "`content` must be a string")
        async with self._write_lock:
            entry = await trio.to_thread.run_sync(self._workspace.create, path, content)
        self._watcher.note_saved(entry, created=True, by=request.header("x-markco-user"))
        await send_json(send, 201, entry.to_json(), _etag(entry.version))

    async def _execute(self, request: Request, send: ASGISend) -> None:
        body = await request.json(_MAX_EXECUTE_BODY)
        exec_id = body.get("execId")
        if exec_id is None:
            exec_id = new_exec_id()
        with self._hub.subscribe(partial(_is_execution, exec_id)) as sub:
            # Subscribed first: not one event of the execution can be missed.
            self._executor.submit(body.get("code"), exec_id, user=request.header("x-markco-user"))
            stream = EventStream(send)
            await stream.start()
            async with trio.open_nursery() as nursery:

                async def stop_when_gone() -> None:
                    await request.wait_disconnect()
                    nursery.cancel_scope.cancel()  # the execution itself carries on

                nursery.start_soon(stop_when_gone)
                await _forward_execution(sub, stream, str(exec_id))
                nursery.cancel_scope.cancel()
            await stream.end()

    async def _interrupt(self, send: ASGISend) -> None:
        try:
            interrupted = await self._executor.interrupt()
        except RuntimeUnavailable as exc:
            raise HTTPError(503, "runtime_unavailable", str(exc)) from None
        await send_json(send, 200, {"interrupted": interrupted})

    async def _notice(self, send: ASGISend) -> None:
        # Answered by the runtime front itself: polling it never wakes a sleeping runtime.
        try:
            notice = await self._executor.notice()
        except RuntimeUnavailable as exc:
            raise HTTPError(503, "runtime_unavailable", str(exc)) from None
        await send_json(send, 200, notice)

    # -- the mrmd editor ----------------------------------------------------------------------

    async def _activity(self) -> None:
        """The page saw the user type or click: reported to markco through the runtime front
        (`POST /markco/v1/activity`, never reaching the runtime); the request itself, a
        non-GET through `/u/`, is activity for the proxy as well."""
        runtime = self._executor.runtime
        if runtime is None:
            return
        try:
            await runtime.report_activity()
        except RuntimeUnavailable as exc:
            log.info("could not report activity: %s", exc)

    async def _mrmd_page(self, send: ASGISend, *, head_only: bool) -> None:
        assert self._ui is not None
        try:
            body = await trio.to_thread.run_sync(self._ui.page)
        except (UIUnavailable, OSError) as exc:
            raise HTTPError(500, "editor_ui_unavailable", str(exc)) from None
        headers = (("content-security-policy", MRMD_CSP), ("cache-control", "no-store"))
        await send_bytes(send, 200, body, "text/html; charset=utf-8", headers,
                         head_only=head_only)

    async def _ui_file(self, request: Request, send: ASGISend, rel: str,
                       head_only: bool) -> None:
        assert self._ui is not None
        found = await trio.to_thread.run_sync(self._ui.file, rel)
        if found is None:
            raise HTTPError(404, "not_found", f"no editor file {rel!r}")
        headers = (("etag", found.etag), ("cache-control", "no-cache"))
        if request.header("if-none-match") == found.etag:
            await send_bytes(send, 304, b"", found.content_type, headers, head_only=True)
            return
        body = await trio.to_thread.run_sync(found.path.read_bytes)
        await send_bytes(send, 200, body, found.content_type, headers, head_only=head_only)

    async def _bridge_call(self, request: Request, send: ASGISend) -> None:
        body = await request.json(_MAX_BRIDGE_BODY)
        call, args = body.get("call"), body.get("args", [])
        if not isinstance(call, str) or not isinstance(args, list):
            raise HTTPError(400, "bad_request", "expected {\"call\": name, \"args\": [...]}")
        # A call that fails is still a well-formed exchange: 200 with the call's error (the UI
        # probes for files that may not exist, and a 4xx would be a console error each time).
        try:
            value = await trio.to_thread.run_sync(self._bridge.call, call, args)
        except BridgeError as exc:
            await send_json(send, 200, {"error": {"code": "bad_call", "message": str(exc),
                                                  "status": 400}})
            return
        except WorkspaceError as exc:
            await send_json(send, 200, {"error": {"code": exc.code, "message": exc.message,
                                                  "status": exc.status}})
            return
        await send_json(send, 200, {"value": value})

    async def _raw_file(self, send: ASGISend, rel: str, head_only: bool) -> None:
        data = await trio.to_thread.run_sync(self._workspace.read_bytes, rel)
        suffix = rel.rpartition(".")[2].lower()
        content_type = _RAW_TYPES.get(suffix, "application/octet-stream")
        # A user's SVG or HTML must not run as this origin's page.
        headers = (("content-security-policy", "sandbox; default-src 'none'; "
                    "img-src 'self' data:; style-src 'unsafe-inline'"),
                   ("cache-control", "no-cache"))
        await send_bytes(send, 200, data, content_type, headers, head_only=head_only)

    async def _mrp(self, request: Request, send: ASGISend) -> None:
        """Forward an MRP call of the page to this editor's runtime front (never any other
        address: the path is all the page chooses)."""
        runtime = self._executor.runtime
        if runtime is None:
            raise HTTPError(503, "runtime_unavailable", "this editor has no runtime")
        path = request.path
        if ".." in path.split("/") or "//" in path:
            raise HTTPError(400, "bad_path", f"{path!r} is not an MRP path")
        query = request.scope.get("query_string", b"").decode("latin-1")
        body = await request.body(_MAX_MRP_BODY) if request.method == "POST" else b""
        target = path + (f"?{query}" if query else "")
        try:
            async with runtime.forward(request.method, target, body,
                                       request.header("content-type")) as response:
                headers = [(b"content-type", response.headers.get(
                    "content-type", "application/octet-stream").encode()),
                    (b"cache-control", b"no-store"), (b"x-accel-buffering", b"no"),
                    (b"x-content-type-options", b"nosniff")]
                await send({"type": "http.response.start", "status": response.status_code,
                            "headers": headers})
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except RuntimeUnavailable as exc:
            raise HTTPError(503, "runtime_unavailable", str(exc)) from None
        except httpx.HTTPError as exc:
            log.warning("the runtime's answer broke off: %s", exc)

    async def _sync_socket(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        """`/sync/<folder>/<name>`: the Yjs room of `<folder>/<name>.md`. The file must
        exist inside the workspace; anything else is closed before the handshake."""
        rel = scope["path"].removeprefix("/sync/") + ".md"
        try:
            await trio.to_thread.run_sync(self._workspace.read, rel)
        except WorkspaceError as exc:
            log.info("sync refused for %r: %s", rel, exc.message)
            await send({"type": "websocket.close", "code": 1008})
            return
        ws = WebSocket(scope, receive, send)
        if not await ws.accept():
            return
        try:
            await self._sync.serve(ws, rel)
        except Exception as exc:  # a client gone mid-message: its room carries on
            log.info("sync connection for %r ended: %s: %s", rel, type(exc).__name__, exc)

    # -- WebSocket ---------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope["path"].startswith("/sync/"):
            await self._sync_socket(scope, receive, send)
            return
        if scope["path"] != "/ws":
            await send({"type": "websocket.close", "code": 1008})  # before accept: a 403
            return
        ws = WebSocket(scope, receive, send)
        if not await ws.accept():
            return
        visitor = ws.headers.get("x-markco-user")
        with self._hub.subscribe() as sub:
            # Greet only once the watcher has a baseline: from `hello` on, every change to the
            # files is notified (bounded, so a huge directory cannot hold the greeting up).
            with trio.move_on_after(_HELLO_WAIT_SECONDS):
                await self._watcher.wait_watching()
            await ws.send_json(
                {
                    "type": "hello",
                    "user": visitor,
                    "role": ws.headers.get("x-markco-role"),
                    "owner": self._settings.owner.id,
                    "running": self._executor.running,
                }
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pump_to_websocket, sub, ws, nursery.cancel_scope)
                while (text := await ws.receive_text()) is not None:
                    await self._ws_command(ws, text, visitor, nursery)
                nursery.cancel_scope.cancel()

    async def _ws_command(
        self, ws: WebSocket, text: str, visitor: str | None, nursery: trio.Nursery
    ) -> None:
        try:
            command = json.loads(text)
        except ValueError:
            command = None
        if not isinstance(command, dict):
            await ws.send_json(_ws_error(None, "bad_request", "a command is a JSON object"))
            return
        kind = command.get("type")
        if kind == "execute":
            exec_id = command.get("execId")
            try:
                self._executor.submit(command.get("code"), exec_id, user=visitor)
            except ExecutionRefused as exc:
                await ws.send_json(_ws_error(exec_id, exc.code, exc.message))
        elif kind == "interrupt":
            nursery.start_soon(self._ws_interrupt, ws)
        else:
            await ws.send_json(
                _ws_error(None, "bad_request", f"unknown command type {kind!r}; "
                          "expected 'execute' or 'interrupt'")
            )

    async def _ws_interrupt(self, ws: WebSocket) -> None:
        try:
            interrupted = await self._executor.interrupt()
        except RuntimeUnavailable as exc:
            await ws.send_json(_ws_error(None, "runtime_unavailable", str(exc)))
            return
        await ws.send_json({"type": "interrupted", "interrupted": interrupted})


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise HTTPError(
            405,
            "method_not_allowed",
            f"{method} is not allowed here; use {' or '.join(allowed)}",
            (("allow", ", ".join(allowed)),),
        )


def _etag(version: str) -> tuple[tuple[str, str]]:
    return (("etag", f'"{version}"'),)


def _is_execution(exec_id: object, message: Message) -> bool:
    return message.get("type") == "exec" and message.get("execId") == exec_id


def _ws_error(exec_id: object, code: str, message: str) -> Message:
    return {"type": "error", "execId": exec_id, "error": {"code": code, "message": message}}


async def _forward_execution(sub: Subscription, stream: EventStream, exec_id: str) -> None:
    """Copy one execution's events to an event stream until its `done`."""
    while True:
        with trio.move_on_after(_SSE_KEEPALIVE_SECONDS) as idle:
            try:
                message = await sub.receive.receive()
            except trio.EndOfChannel:
                message = None
        if idle.cancelled_caught:
            await stream.comment("keep-alive")
            continue
        if message is None:
            # Dropped for falling behind: the execution goes on, this stream cannot follow.
            data = {"execId": exec_id, "type": "StreamDropped",
                    "message": "this client fell behind the output and was disconnected"}
            await stream.event("error", data)
            await stream.event("done", {"execId": exec_id})
            return
        await stream.event(message["event"], {"execId": exec_id, **message["data"]})
        if message["event"] == "done":
            return


async def _pump_to_websocket(
    sub: Subscription, ws: WebSocket, cancel_scope: trio.CancelScope
) -> None:
    """Send every hub message to the socket; close it if the subscription was dropped."""
    async for message in sub.receive:
        await ws.send_json(message)
    if sub.dropped:
        # 1013 "try again later": the page reconnects and reloads what it missed.
        await ws.close(1013, "fell behind the notifications; reconnect")
    cancel_scope.cancel()


async def _lifespan(receive: ASGIReceive, send: ASGISend) -> None:
    # Nothing to set up here: `server.serve_editor` owns the services and their tasks.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
