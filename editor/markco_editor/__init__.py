"""markco's built-in editor, the stand-in for `mrmd-server`.

A separate distribution (`markco-editor`) that never imports the daemon: it meets the editor
contract (docs/editor-contract.md) and nothing more. `serve_editor` runs it inside a trio program;
the `markco-editor` command runs it from the environment.
"""

from __future__ import annotations

__version__ = "0.1.0"

from markco_editor.server import serve_editor
from markco_editor.settings import EditorSettings, Owner, SettingsError

__all__ = ["EditorSettings", "Owner", "SettingsError", "__version__", "serve_editor"]
