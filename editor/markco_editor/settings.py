"""The editor's settings, read from the environment markco gives it (docs/editor-contract.md)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from markco_editor.mrmd_ui import find_ui_dir

__all__ = ["EditorSettings", "Owner", "SettingsError"]

# A BASE_PATH goes into `<base href>` and into URLs: plain path characters only.
_BASE_PATH = re.compile(r"^/(?:[A-Za-z0-9._~@:+-]+/)*$")


class SettingsError(Exception):
    """An environment variable is missing or malformed; the message names it and says why."""


@dataclass(frozen=True)
class Owner:
    """The user this editor belongs to (`CLOUD_USER_*`); every field may be empty."""

    id: str = ""
    name: str = ""
    username: str = ""
    email: str = ""
    avatar: str = ""
    plan: str = ""

    @property
    def display_name(self) -> str:
        """The most human name available: name, then username, then id."""
        return self.name or self.username or self.id


@dataclass(frozen=True)
class EditorSettings:
    """Everything the editor needs to run, resolved and checked."""

    host: str
    port: int
    base_path: str
    user_dir: Path
    runtime_socket: str | None
    runtime_port: int | None
    cloud_mode: bool
    owner: Owner
    public_url: str = ""
    # "mrmd" (the default): the mrmd editor UI from `ui_dir` at `/`; "basic": the textarea
    # editor. The basic editor is also what `/` serves when the UI cache is missing.
    ui: str = "mrmd"
    ui_dir: Path | None = None

    @property
    def runtime_configured(self) -> bool:
        """Whether a runtime front was given at all (socket or port)."""
        return self.runtime_socket is not None or self.runtime_port is not None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> EditorSettings:
        """Read the contract's variables; raise `SettingsError` naming the first bad one.

        Outside markco (no `CLOUD_MODE`) the defaults make `markco-editor` usable on its own:
        127.0.0.1:8080, base path `/`, the current directory as the user's files.
        """
        env = os.environ if environ is None else environ
        host = env.get("HOST", "").strip() or "127.0.0.1"
        port = _port(env, "PORT")
        runtime_port = _port(env, "RUNTIME_PORT")
        if runtime_port == 0:
            raise SettingsError("RUNTIME_PORT=0 is not a port the runtime front can listen on")
        return cls(
            host=host,
            port=8080 if port is None else port,
            base_path=_base_path(env.get("BASE_PATH", "/")),
            user_dir=_user_dir(env.get("MARKCO_USER_DIR", "") or os.getcwd()),
            runtime_socket=env.get("MARKCO_RUNTIME_SOCKET", "").strip() or None,
            runtime_port=runtime_port,
            cloud_mode=env.get("CLOUD_MODE", "").strip() in ("1", "true", "yes"),
            public_url=env.get("MARKCO_PUBLIC_URL", "").strip(),
            ui=_ui(env.get("MARKCO_EDITOR", "")),
            ui_dir=find_ui_dir(dict(env)),
            owner=Owner(
                id=env.get("CLOUD_USER_ID", ""),
                name=env.get("CLOUD_USER_NAME", ""),
                username=env.get("CLOUD_USER_USERNAME", ""),
                email=env.get("CLOUD_USER_EMAIL", ""),
                avatar=env.get("CLOUD_USER_AVATAR", ""),
                plan=env.get("CLOUD_USER_PLAN", ""),
            ),
        )


def _port(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a port number (expected 1-65535)") from None
    # 0 lets the system choose, which tests and `markco-editor` run by hand find handy.
    if not 0 <= port <= 65535:
        raise SettingsError(f"{name}={raw!r} is out of range (expected 1-65535)")
    return port


def _ui(raw: str) -> str:
    ui = raw.strip().lower() or "mrmd"
    if ui not in ("mrmd", "basic"):
        raise SettingsError(f"MARKCO_EDITOR={raw!r} is not an editor; use 'mrmd' or 'basic'")
    return ui


def _base_path(raw: str) -> str:
    path = raw.strip() or "/"
    if not path.endswith("/"):
        path += "/"
    if not _BASE_PATH.match(path) or "/../" in path or "/./" in path:
        raise SettingsError(
            f"BASE_PATH={raw!r} is not a plain URL path such as /u/<userId>/ "
            "(letters, digits and . _ ~ @ : + - between slashes)"
        )
    return path


def _user_dir(raw: str) -> Path:
    path = Path(raw)
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise SettingsError(
            f"MARKCO_USER_DIR={raw!r} does not exist: create it or point it at the user's files"
        ) from None
    if not resolved.is_dir():
        raise SettingsError(f"MARKCO_USER_DIR={raw!r} is not a directory")
    return resolved
