"""Names and labels of what the backend creates on the engine.

Workload names come from the caller (`markco_trio.roles.workload_name`); this module names the
per-user networks and their bridges, and builds the label filters that keep two deployments
sharing one engine from ever seeing each other's containers or networks.
"""

from __future__ import annotations

import hashlib
import json

from markco_trio.roles import LABEL_DEPLOYMENT, LABEL_USER

# Every bridge the backend creates is named `mkc<12 hex>`: Linux caps interface names at 15
# characters, and one fixed prefix lets the host firewall match them all (`iifname "mkc*"`,
# see `firewall`).
BRIDGE_PREFIX = "mkc"
LABEL_NETWORK = "markco.network"


def safe_user(user_id: str) -> str:
    """The user id as it appears in names (the same mapping as `workload_name`)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in user_id)


def network_name(deployment_id: str, user_id: str) -> str:
    """The user's network: `markco-<deployment>-<user>`."""
    return f"markco-{deployment_id}-{safe_user(user_id)}"


def bridge_name(network: str) -> str:
    """The host interface of `network`: `mkc` + 12 hex digits of its name's hash."""
    return BRIDGE_PREFIX + hashlib.sha256(network.encode()).hexdigest()[:12]


def label_filters(deployment_id: str, user_id: str | None = None, **labels: str) -> str:
    """The `filters` query parameter selecting this deployment's objects (of one user)."""
    wanted = [f"{LABEL_DEPLOYMENT}={deployment_id}"]
    if user_id is not None:
        wanted.append(f"{LABEL_USER}={user_id}")
    wanted += [f"{key}={value}" for key, value in labels.items()]
    return json.dumps({"label": wanted})
