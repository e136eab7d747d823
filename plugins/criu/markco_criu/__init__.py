"""markco-criu: the `criu` Checkpointer (`markco_trio.roles.Checkpointer`).

On the built-in `process` backend it runs the `criu` binary on each runtime's own namespace
tree (`process`); on Podman it speaks the engine's checkpoint API (`podman`). `selftest()` says
whether CRIU really dumps and restores a process holding a listening socket here.
"""

from __future__ import annotations

from .plugin import CriuCheckpointer, CriuOptions, markco_checkpointers
from .selftest import SelfTestResult, selftest

__all__ = ["CriuCheckpointer", "CriuOptions", "SelfTestResult", "markco_checkpointers",
           "selftest"]
