"""`[monitor]` validation: bad values are refused with a message naming the key and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from markco_trio.builtin.compute.options import PlanLimits
from markco_trio.builtin.monitor.options import MonitorOptions
from markco_trio.config import load_config
from markco_trio.errors import ConfigError


def test_the_defaults_are_the_originals() -> None:
    options = MonitorOptions()
    assert options.interval == 5.0 and options.idle_timeout == 900.0
    assert [p for _, p in options.levels] == [95.0, 90.0, 75.0, 50.0]
    assert [k for k, _ in options.levels] == ["critical", "urgent-migrate", "migrate",
                                              "pre-provision"]


@pytest.mark.parametrize(("fields", "message"), [
    ({"interval": 0}, "interval"),
    ({"migrate": 40.0}, "strictly increasing"),
    ({"critical": 120.0}, "between 0 and 100"),
    ({"margin": 60.0}, "margin"),
    ({"cooldowns": {"migrat": 10.0}}, "'migrat' is not a monitor event"),
    ({"idle_timeout_by_plan": {"free": 0.0}}, "idle_timeout_by_plan.free"),
    ({"raise_factor": 1.0}, "raise_factor"),
    ({"concurrency": 0}, "concurrency"),
])
def test_bad_values_are_refused_naming_the_key(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MonitorOptions(**fields)  # type: ignore[arg-type]


def test_the_idle_timeout_of_a_plan_overrides_the_default() -> None:
    options = MonitorOptions(idle_timeout=600.0, idle_timeout_by_plan={"free": 60.0})
    assert options.idle_timeout_for("free") == 60.0
    assert options.idle_timeout_for("team") == 600.0
    assert options.idle_timeout_for(None) == 600.0


def test_a_plan_ceiling_below_its_memory_is_refused() -> None:
    with pytest.raises(ValueError, match="max_memory_mib .* must be at least memory_mib"):
        PlanLimits(memory_mib=512, cpus=1.0, max_memory_mib=256)
    assert PlanLimits(memory_mib=256, cpus=0.5).max_memory_bytes == 512 << 20


def test_a_config_file_error_names_the_section_and_key(tmp_path: Path) -> None:
    path = tmp_path / "markco.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path}"\n\n[monitor]\nintervall = 5\n')
    with pytest.raises(ConfigError, match=r"monitor.*intervall.*interval"):
        load_config(path, entry_points=False)
    path.write_text(f'[server]\ndata_dir = "{tmp_path}"\n\n[monitor]\ncritical = 20\n')
    with pytest.raises(ConfigError, match=r"monitor.*strictly increasing"):
        load_config(path, entry_points=False)
