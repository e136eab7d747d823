"""`[workloads]` and `[compute.process]`: defaults, plans merged over the defaults, and errors
that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from markco_trio.builtin.compute.options import DEFAULT_PLANS, PlanLimits, WorkloadsOptions
from markco_trio.config import load_config
from markco_trio.errors import ConfigError

from .harness import plugin_modules


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "markco.toml"
    path.write_text(f'[plugins]\nmodules = {json.dumps(plugin_modules())}\n\n'
                    f'[compute]\nbackend = "process"\n\n{body}')
    return path


def test_the_default_plans_are_free_pro_and_team() -> None:
    options = WorkloadsOptions()
    assert options.limits_for("free") == ("free", PlanLimits(256, 0.5))
    assert options.limits_for("pro") == ("pro", PlanLimits(512, 1.0))
    assert options.limits_for("team") == ("team", PlanLimits(1024, 2.0))
    assert options.limits_for("no-such-plan") == ("free", DEFAULT_PLANS["free"])


def test_configured_plans_override_one_and_keep_the_others(tmp_path: Path) -> None:
    config, _ = load_config(write(tmp_path, "[workloads.plans.pro]\nmemory_mib = 768\n"
                                            "cpus = 1.5\n\n[workloads.plans.lab]\n"
                                            "memory_mib = 4096\ncpus = 4\n"),
                            entry_points=False)
    options = config.section("workloads")
    assert options.limits_for("pro")[1] == PlanLimits(768, 1.5)
    assert options.limits_for("lab")[1].memory_bytes == 4096 << 20
    assert options.limits_for("free")[1] == DEFAULT_PLANS["free"]


@pytest.mark.parametrize(("body", "message"), [
    ("[workloads]\ndefault_plan = \"gold\"\n", "default_plan"),
    ("[workloads.plans.tiny]\nmemory_mib = 8\ncpus = 1\n", "memory_mib"),
    ("[workloads]\nready_timout = 5\n", "did you mean 'ready_timeout'"),
    ("[compute.process]\nport_range = \"40000\"\n", "port_range"),
    ("[compute.process]\nrun_as = 3\n", "run_as"),
    ("[compute.process]\nuid_range = \"1000-2000\"\n", "uid_range"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path: Path, body: str,
                                               message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, body), entry_points=False)


def test_the_process_backend_options_have_safe_defaults(tmp_path: Path) -> None:
    config, _ = load_config(write(tmp_path, ""), entry_points=False)
    options = config.roles["compute"].options["process"]
    assert options.namespaces and options.cgroups
    assert options.uid_range == "200000-299999"  # far from the host's own accounts
    assert options.port_range == "20000-32000"
