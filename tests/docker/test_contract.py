"""The docker backend passes the ContainerBackend contract kit on a real podman service."""

from __future__ import annotations

from markco_trio.testing.backend_kit import BackendContract


class TestDockerBackendOnPodman(BackendContract):
    """The kit, with the fixtures of conftest.py (a throw-away `podman system service`)."""
