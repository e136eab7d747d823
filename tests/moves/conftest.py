"""The move tests stand on the compute tests' fixtures (a data directory, throw-away
deployment ids)."""

from __future__ import annotations

from tests.compute.conftest import (  # noqa: F401 - fixtures, found by pytest by name
    cleanup_workloads,
    compute_root,
    data_dir,
    deployment_ids,
    wpython,
    write_compute_config,
)
