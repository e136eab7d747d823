"""The front door of the daemon: every HTTP request arrives here (DESIGN §3.1, §3.2).

The face of the package is `FrontDoor` (the trio server), `EditorGate` (who may pass into
`/u/<userId>/`, given the session authority, the authorisation decision and compute) and
`ActivityRecord` (what each user's editor saw, for the monitor). The pure parts they are built
from (parsing heads, chunked framing, paths, routing, admission rules, cookies, rewriting heads,
the wait page) live in their own modules and are tested without sockets.
"""

from markco_trio.proxy.activity import ActivityRecord, UserActivity
from markco_trio.proxy.gate import EditorGate
from markco_trio.proxy.server import FrontDoor, FrontDoorStatistics

__all__ = ["ActivityRecord", "EditorGate", "FrontDoor", "FrontDoorStatistics", "UserActivity"]
