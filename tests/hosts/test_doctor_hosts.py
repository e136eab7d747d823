"""`markco doctor` with several hosts: each engine is checked and named on its own."""

from __future__ import annotations

from pathlib import Path

from markco_trio.doctor import diagnose
from tests.ops.test_doctor import migrate, write_config


async def test_each_host_is_checked_and_a_dead_one_is_named(tmp_path: Path) -> None:
    first, second = tmp_path / "a.sock", tmp_path / "b.sock"
    config = write_config(tmp_path / "markco.toml", compute=f"""
        [compute]
        backend = "docker"

        [compute.docker]
        engine_url = "unix://{first}"
        host_name = "web1"

        [[compute.docker.hosts]]
        name = "gpu1"
        engine_url = "unix://{second}"
        labels = ["gpu"]
        """)
    migrate(config)
    engines = [r for r in await diagnose(config, skip=["edge", "firewall"])
               if r.name == "engine"]
    assert [r.title.split("(", 1)[1] for r in engines] == [
        f"web1 unix://{first})", f"gpu1 unix://{second})"]
    assert all(r.status == "fail" and "does not answer" in r.detail for r in engines)
    assert str(second) in engines[1].detail and "TLS files" in engines[1].fix
