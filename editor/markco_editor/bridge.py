"""The server side of `window.electronAPI` for the mrmd editor in a browser.

The mrmd UI (npm `mrmd-electron`) talks to its desktop main process through `electronAPI`
(`preload.cjs`; `main.js` documents what each call does). In a browser the shim
(`static/mrmd-shim.js`) sends those calls here as `POST api/bridge` with
`{"call": "<name>", "args": [...]}` and gets `{"value": ...}` back, or `{"error": {"code",
"message", "status"}}` when the call fails (still HTTP 200: the exchange itself went well).

Paths: the UI works with absolute paths. The user's files appear to it under a virtual home,
`HOME` (`/home/user`); every path is turned into a path relative to the user's directory and
confined by `Workspace.resolve` (no `..`, no hidden segment, no symbolic link leading out), so
no call can name a file outside it — or the server's real layout.

The runtime: markco gives each user one runtime, reached through the runtime front. Every
runtime call answers with that one runtime (`RUNTIME_INFO`, `alive`: the front wakes it on the
first request); the UI's `http://127.0.0.1:<port>/mrp/v1/...` requests are sent by the shim to
`mrp/v1/...` under `BASE_PATH`, which this editor forwards to its own runtime front only.
Starting venvs, other languages, stopping the runtime, voice, AI and cloud calls are desktop
features: they answer "not available in the browser".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from markco_editor.workspace import MARKDOWN_SUFFIXES, Workspace, WorkspaceError

__all__ = ["HOME", "Bridge", "BridgeError", "NOT_IN_BROWSER"]

HOME = "/home/user"
NOT_IN_BROWSER = "not available in the browser"
# The port the UI is told the runtime listens on. Never dialled: the shim maps any
# http://127.0.0.1:<port>/mrp/v1/ URL to this editor's own runtime route.
RUNTIME_PORT_ALIAS = 41765
_SETTINGS_FILE = ".markco/mrmd-settings.json"
_MAX_SETTINGS_BYTES = 256 * 1024
_MAX_SCAN = 5000
_SKIP_DIRS = frozenset({"node_modules", "__pycache__", "site-packages", "venv"})
_ORDER_PREFIX = re.compile(r"^\d+[-_. ]+")


class BridgeError(Exception):
    """A call that cannot be answered (bad arguments, unknown call): 400 with the message."""


def _title(name: str) -> str:
    """FSML's display name: the order prefix and suffix dropped, dashes as spaces."""
    stem = name
    for suffix in MARKDOWN_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    stem = _ORDER_PREFIX.sub("", stem).replace("-", " ").replace("_", " ").strip()
    return stem[:1].upper() + stem[1:] if stem else name


def _frontmatter(text: str) -> dict[str, str]:
    """The top-level `key: value` pairs of a YAML front matter (enough for a project's name);
    nested blocks are skipped."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    found: dict[str, str] = {}
    for line in lines[1:]:
        if line.strip() == "---":
            break
        if line[:1] in (" ", "\t", "#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        value = value.strip().strip("'\"")
        if value:
            found[key.strip()] = value
    return found


class Bridge:
    """The calls of the module doc for one editor."""

    def __init__(self, workspace: Workspace, *, runtime_configured: bool,
                 owner: dict[str, str] | None = None,
                 on_saved: Callable[[str], None] = lambda path: None) -> None:
        self._workspace = workspace
        self._owner = owner or {}
        self._runtime_configured = runtime_configured
        self._on_saved = on_saved
        self._calls: dict[str, Callable[..., Any]] = {
            "getHomeDir": lambda: HOME,
            "getRecent": self.recent,
            "scanFiles": self.scan,
            "file.scan": self.scan,
            "readPreview": self.read_preview,
            "getFileInfo": self.file_info,
            "openFile": self.open_file,
            "project.get": self.project,
            "project.create": self.create_project,
            "project.nav": lambda root: (self.project(str(root) + "/mrmd.md") or {}).get(
                "navTree", []),
            "project.invalidate": lambda *_: True,
            "file.create": self.create_file,
            "file.createInProject": self.create_in_project,
            "file.move": self.move_file,
            "file.delete": self.delete_file,
            "file.read": self.read_file,
            "file.write": self.write_file,
            "asset.list": self.asset_list,
            "asset.save": self.asset_save,
            "asset.read": self.asset_read,
            "asset.relativePath": self.asset_relative_path,
            "asset.orphans": lambda *_: [],
            "runtime.list": self.runtime_list,
            "runtime.start": self.runtime_for,
            "runtime.forDocumentLanguage": self.runtime_for_language,
            "runtime.ensureEffective": self.runtime_for_language,
            "runtime.forDocument": self.runtime_for_document,
            "runtime.isAvailable": self.runtime_available,
            "runtime.languages": lambda: ["python"] if self._runtime_configured else [],
            "runtime.prefs.get": lambda *_: {},
            "cloud.status": self.cloud_status,
            "settings.getAll": self.settings_all,
            "settings.get": self.settings_get,
            "settings.set": self.settings_set,
            "settings.update": self.settings_update,
            "settings.reset": self.settings_reset,
        }

    @property
    def names(self) -> frozenset[str]:
        """The calls answered here (the shim answers the rest itself)."""
        return frozenset(self._calls)

    def call(self, name: str, args: list[Any]) -> Any:
        """Run one call (blocking: file system work; run it in a thread)."""
        handler = self._calls.get(name)
        if handler is None:
            raise BridgeError(f"{name!r} is {NOT_IN_BROWSER}")
        try:
            return handler(*args)
        except TypeError as exc:
            raise BridgeError(f"bad arguments for {name!r}: {exc}") from None

    # -- paths --------------------------------------------------------------------------------

    def rel(self, path: object, *, allow_root: bool = False) -> str:
        """A virtual absolute path (or one relative to the home) as a workspace path; ''
        for the home itself when `allow_root`. Raises `WorkspaceError` 403 outside it."""
        if not isinstance(path, str) or not path:
            raise WorkspaceError(400, "bad_path", "a file path is required")
        if "\x00" in path or "\\" in path:
            raise WorkspaceError(400, "bad_path", f"{path!r} is not a valid path")
        if path.startswith("~/") or path == "~":
            path = HOME + path[1:]
        if not path.startswith("/"):
            path = HOME + "/" + path
        if ".." in path.split("/"):
            raise WorkspaceError(400, "bad_path", f"{path!r} contains '..'; paths cannot go up")
        norm = posixpath.normpath(path)
        if norm == HOME and allow_root:
            return ""
        if not norm.startswith(HOME + "/"):
            raise WorkspaceError(403, "outside_workspace",
                                 f"{path!r} is outside your files ({HOME})")
        return norm[len(HOME) + 1:]

    def _dir(self, path: object) -> tuple[str, Path]:
        """A folder inside the workspace (the root allowed) and its real location."""
        rel = self.rel(path, allow_root=True)
        if rel == "":
            return "", self._workspace.root
        rel, real = self._workspace.resolve(rel, markdown=False)
        return rel, real

    @staticmethod
    def abs(rel: str) -> str:
        return HOME + ("/" + rel if rel else "")

    # -- files ----------------------------------------------------------------------------------

    def _walk(self, rel_dir: str, real_dir: Path) -> tuple[list[str], list[str]]:
        files: list[str] = []
        dirs: list[str] = []
        root = self._workspace.root
        for dirpath, dirnames, filenames in os.walk(real_dir, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames
                                 if not d.startswith((".", "_")) and d not in _SKIP_DIRS)
            base = Path(dirpath)
            dirs.extend(self.abs((base / d).relative_to(root).as_posix()) for d in dirnames)
            for name in sorted(filenames):
                if name.startswith(".") or Path(name).suffix.lower() not in MARKDOWN_SUFFIXES:
                    continue
                full = base / name
                if full.is_symlink():
                    continue  # a link may lead out; the file list shows real files only
                files.append(self.abs(full.relative_to(root).as_posix()))
                if len(files) >= _MAX_SCAN:
                    return files, dirs
        return files, dirs

    def scan(self, root: object = None, _options: object = None) -> dict[str, Any]:
        """Markdown files and folders below a folder: `{"files", "dirs"}` (absolute). The
        home's ancestors (`/`, `/home`) hold only the home: scanning them scans it."""
        if not root or (isinstance(root, str) and (HOME + "/").startswith(
                root.rstrip("/") + "/")):
            root = HOME
        rel_dir, real = self._dir(root)
        files, dirs = self._walk(rel_dir, real)
        return {"files": files, "dirs": dirs}

    def recent(self) -> dict[str, Any]:
        """The most recently changed notebooks stand in for the desktop's recent files."""
        listing = self._workspace.list_markdown()
        files = sorted(listing.files, key=lambda e: e.mtime, reverse=True)[:20]
        return {"files": [self.abs(e.path) for e in files], "venvs": []}

    def read_preview(self, path: object, lines: object = 30) -> dict[str, Any]:
        _, text = self._workspace.read(self.rel(path))
        count = lines if isinstance(lines, int) and 1 <= lines <= 200 else 30
        return {"success": True, "preview": "\n".join(text.split("\n")[:count])}

    def file_info(self, path: object) -> dict[str, Any]:
        rel, real = self._workspace.resolve(self.rel(path), markdown=False)
        try:
            st = real.stat()
        except OSError:
            return {"success": False, "error": f"{self.abs(rel)} does not exist"}
        parent = posixpath.dirname(rel)
        return {"success": True, "size": st.st_size, "modified": st.st_mtime,
                "gitRoot": None, "projectName": posixpath.basename(parent) or "home"}

    def open_file(self, path: object) -> dict[str, Any]:
        """What the desktop's `open-file` answers, less the ports (the shim assigns them):
        the document's name in its folder's sync server and that folder."""
        rel, real = self._workspace.resolve(self.rel(path))
        if not real.is_file():
            return {"success": False, "error": f"{self.abs(rel)} does not exist"}
        folder = posixpath.dirname(rel)
        name = posixpath.basename(rel)
        return {"success": True, "docName": name.rsplit(".", 1)[0],
                "projectDir": self.abs(folder), "pythonPort": None}

    def read_file(self, path: object) -> dict[str, Any]:
        _, text = self._workspace.read(self.rel(path))
        return {"success": True, "content": text}

    def write_file(self, path: object, content: object) -> dict[str, Any]:
        if not isinstance(content, str):
            raise BridgeError("`content` must be a string")
        entry, _ = self._workspace.write(self.rel(path), content)
        self._on_saved(entry.path)
        return {"success": True}

    def create_file(self, path: object, content: object = "") -> dict[str, Any]:
        entry = self._workspace.create(self.rel(path), content if isinstance(content, str) else "")
        self._on_saved(entry.path)
        return {"success": True, "path": self.abs(entry.path)}

    def create_in_project(self, root: object, relative: object,
                          content: object = "") -> dict[str, Any]:
        if not isinstance(relative, str):
            raise BridgeError("`relativePath` must be a string")
        if not relative.lower().endswith(tuple(MARKDOWN_SUFFIXES)):
            relative += ".md"
        base = self.rel(root, allow_root=True)
        return self.create_file(self.abs(posixpath.join(base, relative) if base else relative),
                                content)

    def move_file(self, root: object, source: object, target: object) -> dict[str, Any]:
        base = self.rel(root, allow_root=True)

        def inside(p: object) -> str:
            if isinstance(p, str) and not p.startswith("/"):
                return posixpath.join(base, p) if base else p
            return self.rel(p)

        moved = self._workspace.move(inside(source), inside(target))
        self._on_saved(moved)
        return {"success": True, "newPath": self.abs(moved), "movedFiles": [],
                "updatedFiles": []}

    def delete_file(self, path: object) -> dict[str, Any]:
        self._workspace.delete(self.rel(path))
        return {"success": True}

    # -- projects ---------------------------------------------------------------------------------

    def project(self, path: object) -> dict[str, Any] | None:
        """The project holding `path`: the nearest folder with a `mrmd.md`, at or above the
        file's folder and inside the home; None for a file in no project."""
        rel = self.rel(path, allow_root=True)
        folder = posixpath.dirname(rel)
        while True:
            marker = posixpath.join(folder, "mrmd.md") if folder else "mrmd.md"
            with contextlib.suppress(WorkspaceError):
                _, text = self._workspace.read(marker)
                return self._project_info(folder, text)
            if not folder:
                return None
            folder = posixpath.dirname(folder)

    def _project_info(self, folder: str, config_text: str) -> dict[str, Any]:
        real = self._workspace.root.joinpath(folder) if folder else self._workspace.root
        files, _ = self._walk(folder, real)
        root = self.abs(folder)
        relative = [f[len(root) + 1:] for f in files]
        meta = _frontmatter(config_text)
        config = {"name": meta.get("name") or meta.get("title") or posixpath.basename(root)}
        return {"root": root, "config": config, "files": relative,
                "navTree": _nav_tree(relative)}

    def create_project(self, target: object) -> dict[str, Any] | None:
        rel = self.rel(target)
        name = posixpath.basename(rel)
        self._workspace.create(posixpath.join(rel, "mrmd.md"),
                               f"---\ntitle: {name}\n---\n\n# {name}\n")
        return self.project(self.abs(posixpath.join(rel, "mrmd.md")))

    # -- assets -------------------------------------------------------------------------------

    def _assets_rel(self, root: object, asset: object) -> str:
        if not isinstance(asset, str) or not asset or asset.startswith("/"):
            raise BridgeError("an asset path relative to the project's _assets/ is required")
        base = self.rel(root, allow_root=True)
        return posixpath.join(base, "_assets", asset) if base else f"_assets/{asset}"

    def asset_save(self, root: object, data: object, filename: object) -> dict[str, Any]:
        """Save bytes under the project's `_assets/` (a number appended if the name is
        taken; the same bytes already there are reused). `data` is a list of byte values."""
        if not isinstance(data, list) or not all(isinstance(b, int) and 0 <= b < 256
                                                  for b in data):
            raise BridgeError("`file` must be a list of byte values")
        if not isinstance(filename, str) or not filename:
            raise BridgeError("`filename` is required")
        payload = bytes(data)
        stem, dot, suffix = filename.rpartition(".")
        if not dot:
            stem, suffix = filename, ""
        for n in range(1000):
            name = filename if n == 0 else f"{stem}-{n}{dot}{suffix}"
            rel = self._assets_rel(root, name)
            try:
                self._workspace.write_bytes(rel, payload, exclusive=True)
            except WorkspaceError as exc:
                if exc.code != "exists":
                    raise
                if _same_bytes(self._workspace.read_bytes(rel), payload):
                    return {"path": name, "deduplicated": True}
                continue
            return {"path": name, "deduplicated": False}
        raise BridgeError(f"too many assets named like {filename!r}")

    def asset_read(self, root: object, asset: object) -> dict[str, Any]:
        data = self._workspace.read_bytes(self._assets_rel(root, asset))
        return {"success": True, "bytes": list(data)}

    def asset_list(self, root: object) -> list[dict[str, Any]]:
        rel_dir, real = self._dir(root)
        assets = real / "_assets"
        found: list[dict[str, Any]] = []
        if assets.is_symlink() or not assets.is_dir():
            return found
        for dirpath, dirnames, filenames in os.walk(assets, followlinks=False):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                full = Path(dirpath) / name
                st = full.lstat()
                if name.startswith(".") or not stat.S_ISREG(st.st_mode):
                    continue
                found.append({"path": full.relative_to(assets).as_posix(), "size": st.st_size})
        return found

    @staticmethod
    def asset_relative_path(asset: object, document: object) -> str:
        """From a document (relative to its project) to `_assets/<asset>`."""
        if not isinstance(asset, str) or not isinstance(document, str):
            raise BridgeError("asset and document paths are required")
        doc_dir = posixpath.dirname(document.lstrip("/"))
        return posixpath.relpath(posixpath.join("_assets", asset), doc_dir or ".")

    # -- the runtime ------------------------------------------------------------------------------

    def _runtime(self, language: str = "python") -> dict[str, Any]:
        if language != "python":
            return {"language": language, "alive": False, "available": False,
                    "error": f"{language} runtimes are {NOT_IN_BROWSER}: markco runs python"}
        if not self._runtime_configured:
            return {"language": "python", "alive": False, "available": False,
                    "error": "this editor has no runtime"}
        return {"name": "python", "id": "python", "language": "python",
                "port": RUNTIME_PORT_ALIAS,
                "url": f"http://127.0.0.1:{RUNTIME_PORT_ALIAS}/mrp/v1",
                "cwd": HOME, "venv": None, "pid": None, "daemonized": True,
                "alive": True, "available": True, "autoStart": True}

    def runtime_list(self, language: object = None) -> list[dict[str, Any]]:
        runtime = self._runtime()
        if not runtime["alive"] or language not in (None, "", "python"):
            return []
        return [runtime]

    def runtime_for(self, config: object = None) -> dict[str, Any]:
        language = config.get("language", "python") if isinstance(config, dict) else "python"
        return self._runtime(str(language or "python").lower())

    def runtime_for_language(self, _document: object = None, language: object = "python",
                             _options: object = None) -> dict[str, Any]:
        return self._runtime(str(language or "python").lower())

    def runtime_for_document(self, _document: object = None) -> dict[str, Any]:
        return {lang: self._runtime(lang) for lang in ("python", "bash", "r", "julia", "pty")}

    def runtime_available(self, language: object = "python") -> dict[str, Any]:
        runtime = self._runtime(str(language or "python").lower())
        return {"available": runtime["available"], "error": runtime.get("error")}

    def cloud_status(self) -> dict[str, Any]:
        """In the browser the user is on markco: signed in, every notebook already there
        (the desktop's "cloud sync" has nothing to bridge)."""
        documents = len(self._workspace.list_markdown().files)
        return {"signedIn": True,
                "user": {"name": self._owner.get("name", ""),
                         "email": self._owner.get("email", "")},
                "syncStatus": {"projects": [],
                               "totals": {"documents": documents,
                                          "connectedDocuments": documents}}}

    # -- settings (per user, in their directory) -------------------------------------------

    def _settings_path(self) -> Path:
        return self._workspace.root / _SETTINGS_FILE

    def settings_all(self) -> dict[str, Any]:
        path = self._settings_path()
        try:
            # O_NOFOLLOW: the user's code could plant a link here.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return {}
        with os.fdopen(fd, "rb") as f:
            data = f.read(_MAX_SETTINGS_BYTES + 1)
        try:
            value = json.loads(data) if len(data) <= _MAX_SETTINGS_BYTES else {}
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def _save_settings(self, settings: dict[str, Any]) -> None:
        data = json.dumps(settings, indent=2).encode()
        if len(data) > _MAX_SETTINGS_BYTES:
            raise BridgeError(f"settings are limited to {_MAX_SETTINGS_BYTES} bytes")
        directory = self._settings_path().parent
        if directory.is_symlink():
            raise BridgeError(f"{directory} is a symbolic link; remove it to save settings")
        directory.mkdir(mode=0o700, exist_ok=True)
        tmp = directory / ".mrmd-settings.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, self._settings_path())

    def settings_get(self, key: object, default: object = None) -> Any:
        value: Any = self.settings_all()
        for part in str(key).split("."):
            if not isinstance(value, dict) or part not in value:
                return default
            value = value[part]
        return value

    def settings_set(self, key: object, value: object) -> bool:
        settings = self.settings_all()
        node = settings
        parts = str(key).split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
        self._save_settings(settings)
        return True

    def settings_update(self, updates: object) -> bool:
        if not isinstance(updates, dict):
            raise BridgeError("`updates` must be an object")
        for key, value in updates.items():
            self.settings_set(key, value)
        return True

    def settings_reset(self) -> bool:
        self._save_settings({})
        return True


def _same_bytes(a: bytes, b: bytes) -> bool:
    return hashlib.sha256(a).digest() == hashlib.sha256(b).digest()


def _nav_tree(files: list[str]) -> list[dict[str, Any]]:
    """FSML's navigation tree: folders and notebooks in path order, titles without order
    prefixes; `mrmd.md` (the project's config) is not a page."""
    root: dict[str, Any] = {"children": []}
    folders: dict[str, dict[str, Any]] = {"": root}
    for path in sorted(files):
        if path == "mrmd.md":
            continue
        parts = path.split("/")
        for i in range(1, len(parts)):
            key = "/".join(parts[:i])
            if key not in folders:
                node = {"path": key, "title": _title(parts[i - 1]), "isFolder": True,
                        "children": []}
                folders["/".join(parts[: i - 1])]["children"].append(node)
                folders[key] = node
        folders["/".join(parts[:-1])]["children"].append(
            {"path": path, "title": _title(parts[-1]), "isFolder": False, "children": []})
    children: list[dict[str, Any]] = root["children"]
    return children
