"""The front door of the daemon: every HTTP request arrives here (DESIGN §3.1).

The face of the package is `FrontDoor` (the trio server); the pure parts it is built from
(parsing heads, chunked framing, routing, rewriting heads) live in their own modules and are
tested without sockets.
"""

from markco_trio.proxy.server import FrontDoor, FrontDoorStatistics

__all__ = ["FrontDoor", "FrontDoorStatistics"]
