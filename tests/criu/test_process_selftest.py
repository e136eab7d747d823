"""`markco_criu.selftest()` (for `markco doctor`) and how the plugin is registered."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from markco_criu import CriuOptions, markco_checkpointers, selftest

from markco_trio.config import load_config
from markco_trio.testing.system import missing_system


async def test_selftest_dumps_and_restores_a_process_holding_a_listening_socket() -> None:
    if os.geteuid() != 0:
        missing_system("root", "CRIU needs root")
    if shutil.which("criu", path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin") is None:
        missing_system("criu", "run scripts/setup-criu")
    result = await selftest()
    assert result.ok, f"{result.step}: {result.message}"
    assert result.step == "done"
    assert result.criu_version and result.dump_ms is not None and result.restore_ms is not None


async def test_selftest_names_the_failing_step_and_how_to_fix_it() -> None:
    result = await selftest(criu="/nonexistent/criu")
    assert not result.ok
    assert result.step == "locate"
    assert "scripts/setup-criu" in result.message


def test_the_criu_checkpointer_is_registered_through_the_markco_entry_point() -> None:
    points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="markco")}
    assert points.get("criu") == "markco_criu.plugin"
    (spec,) = markco_checkpointers()
    assert spec.name == "criu"
    assert spec.options is CriuOptions


def test_criu_options_refuse_a_negative_ghost_limit() -> None:
    with pytest.raises(ValueError, match="ghost_limit_mib"):
        CriuOptions(ghost_limit_mib=-1)


def test_the_config_chooses_the_criu_checkpointer_and_validates_its_options(
        write_config: Callable[[str], Path]) -> None:
    config, _ = load_config(write_config(
        '[checkpoint]\nprovider = "criu"\n\n[checkpoint.criu]\nwork_dir = "/tmp"\n'
        'ghost_limit_mib = 16\n'))
    checkpoint = config.roles["checkpoint"]
    assert tuple(checkpoint.names) == ("criu",)
