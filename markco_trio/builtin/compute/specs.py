"""The `ContainerSpec`s of a user's runtime and editor: names, labels, limits, and the editor's
environment exactly as `docs/editor-contract.md` defines it (nothing else of the daemon's)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ...records import User, WorkloadRole
from ...roles import (
    LABEL_DEPLOYMENT,
    LABEL_OPERATION,
    LABEL_ROLE,
    LABEL_USER,
    BackendCapabilities,
    ContainerSpec,
    workload_name,
)
from .options import PlanLimits, WorkloadsOptions

# Where a container backend mounts the runtime front's directory inside the editor.
CONTAINER_FRONT_DIR = "/run/markco"


def resolve_command(command: list[str], caps: BackendCapabilities) -> tuple[str, ...]:
    """A bare program name is looked up next to the daemon's own Python first (its virtual
    environment holds mrmd-python and markco-editor), then on PATH — for backends whose
    workloads see the host's paths. Inside containers the image decides."""
    if caps.mounts or not command or "/" in command[0]:
        return tuple(command)
    beside = Path(sys.executable).parent / command[0]
    if beside.exists():
        return (str(beside), *command[1:])
    found = shutil.which(command[0])
    return (found or command[0], *command[1:])


def labels(deployment_id: str, user_id: str, role: WorkloadRole,
           operation_id: str | None) -> dict[str, str]:
    """The labels every workload carries."""
    out = {LABEL_DEPLOYMENT: deployment_id, LABEL_USER: user_id, LABEL_ROLE: role.value}
    if operation_id:
        out[LABEL_OPERATION] = operation_id
    return out


def runtime_spec(*, deployment_id: str, user: User, user_dir: Path, limits: PlanLimits,
                 options: WorkloadsOptions, caps: BackendCapabilities,
                 operation_id: str | None) -> ContainerSpec:
    """mrmd-python for `user` (stopped with SIGKILL: `--managed` ignores SIGTERM)."""
    role = WorkloadRole.RUNTIME
    return ContainerSpec(
        name=workload_name(deployment_id, user.id, role), user_id=user.id, role=role,
        command=resolve_command(options.runtime_command, caps), env={},
        user_dir=str(user_dir), memory_bytes=limits.memory_bytes, cpus=limits.cpus,
        labels=labels(deployment_id, user.id, role, operation_id),
        image=options.runtime_image or None, stop_signal="SIGKILL")


def editor_env(user: User, *, plan: str, front_socket: str,
               runtime_port: int | None, public_url: str = "") -> dict[str, str]:
    """The editor contract's environment (placeholders resolved by the backend).
    `MARKCO_PUBLIC_URL` is the origin browsers reach markco at: the editor accepts that Host
    (and loopback ones) and refuses other Origins (docs/editor-contract.md)."""
    env = {
        "CLOUD_MODE": "1",
        "MARKCO_PUBLIC_URL": public_url,
        "HOST": "{host}",
        "PORT": "{port}",
        "BASE_PATH": f"/u/{user.id}/",
        "MARKCO_USER_DIR": "{user_dir}",
        "MARKCO_RUNTIME_SOCKET": front_socket,
        "CLOUD_USER_ID": user.id,
        "CLOUD_USER_NAME": user.name or "",
        "CLOUD_USER_USERNAME": user.username,
        "CLOUD_USER_EMAIL": user.email or "",
        "CLOUD_USER_AVATAR": user.avatar_url or "",
        "CLOUD_USER_PLAN": plan,
    }
    if runtime_port is not None:
        env["RUNTIME_PORT"] = str(runtime_port)
    return env


def editor_spec(*, deployment_id: str, user: User, user_dir: Path, plan: str,
                front_socket: Path, runtime_port: int | None, options: WorkloadsOptions,
                caps: BackendCapabilities, operation_id: str | None,
                public_url: str = "") -> ContainerSpec:
    """The editor for `user`, reaching the runtime only through the runtime front."""
    role = WorkloadRole.EDITOR
    mounts: tuple[tuple[str, str, bool], ...] = ()
    socket = str(front_socket)
    if caps.mounts:
        # Only the user's own front directory goes into their editor's container.
        mounts = ((str(front_socket.parent), CONTAINER_FRONT_DIR, False),)
        socket = f"{CONTAINER_FRONT_DIR}/{front_socket.name}"
        runtime_port = None  # a container editor wanting TCP runs its own forwarder
    limits = options.editor_limits
    return ContainerSpec(
        name=workload_name(deployment_id, user.id, role), user_id=user.id, role=role,
        command=resolve_command(options.editor_command, caps),
        env=editor_env(user, plan=plan, front_socket=socket, runtime_port=runtime_port,
                       public_url=public_url),
        user_dir=str(user_dir), memory_bytes=limits.memory_bytes, cpus=limits.cpus,
        labels=labels(deployment_id, user.id, role, operation_id),
        image=options.editor_image or None, mounts=mounts, stop_signal="SIGTERM")
