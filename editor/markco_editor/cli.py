"""`markco-editor`: configured by the environment (docs/editor-contract.md), stopped by SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from markco_editor import __version__
from markco_editor.server import serve_editor
from markco_editor.settings import EditorSettings, SettingsError

__all__ = ["main"]

log = logging.getLogger("markco_editor")

_DESCRIPTION = """\
markco's built-in editor: the mrmd editor (its UI fetched by scripts/fetch-editor-ui) for the
markdown notebooks of MARKCO_USER_DIR, running their code on the runtime behind
MARKCO_RUNTIME_SOCKET (or RUNTIME_PORT); the textarea editor at /basic (or at / with
MARKCO_EDITOR=basic). Configured by the environment: HOST, PORT, BASE_PATH, MARKCO_USER_DIR,
MARKCO_RUNTIME_SOCKET, RUNTIME_PORT, CLOUD_MODE, CLOUD_USER_*, MARKCO_EDITOR, MARKCO_EDITOR_UI.
SIGTERM or SIGINT stops it (open notebooks are saved first).
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the editor until SIGTERM/SIGINT; 0 then, 2 for bad settings, 1 if it cannot serve."""
    parser = argparse.ArgumentParser(prog="markco-editor", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = EditorSettings.from_environ()
    except SettingsError as exc:
        print(f"markco-editor: {exc}", file=sys.stderr)
        return 2
    failures: Sequence[BaseException] = ()
    try:
        trio.run(_run, settings)
    except* OSError as group:
        failures = _leaves(group)
    for failure in failures:
        # Typically the port: say which address, not a traceback.
        print(f"markco-editor: cannot serve on {settings.host}:{settings.port}: {failure}",
              file=sys.stderr)
    return 1 if failures else 0


def _leaves(group: BaseExceptionGroup[OSError]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


async def _run(settings: EditorSettings) -> None:
    # The editor is stateless and writes are atomic renames: stopping at once loses nothing
    # (open notebooks save their pending edits as they are cancelled), so a signal cancels
    # everything rather than waiting for WebSockets to drain.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_editor, settings)
            async for signum in signals:
                log.info("%s received: stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
