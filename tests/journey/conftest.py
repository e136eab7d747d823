"""The journey stands on the compute tests' fixtures: a directory the workloads' account can
reach, a Python it can run, throw-away deployments whose processes and cgroups go away."""

from __future__ import annotations

from tests.compute.conftest import (  # noqa: F401 - fixtures, found by pytest by name
    cleanup_workloads,
    compute_root,
    data_dir,
    deployment_ids,
    wpython,
)
