"""`config/production.toml` names what a documented build produces: the images
`scripts/setup-podman` builds, with the mounts those images need (what `--print-config` prints
for markco checked out at /opt/markco), and `markco check-config` accepts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from markco_docker import DockerOptions, localimage

from markco_trio.config import load_config

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "config" / "production.toml"
INSTALL_DIR = "/opt/markco"  # where the file's comments have markco checked out
SECRETS = {"MARKCO_DATABASE_URL": "postgresql://markco:dummy@127.0.0.1:5432/markco",
           "MARKCO_GITHUB_CLIENT_SECRET": "dummy-secret"}


def docker_options() -> DockerOptions:
    config, _ = load_config(PRODUCTION, environ=SECRETS)
    options = config.roles["compute"].options["docker"]
    assert isinstance(options, DockerOptions)
    return options


def test_markco_check_config_accepts_it_given_its_secrets() -> None:
    env = {**os.environ, **SECRETS}
    done = subprocess.run([str(Path(sys.executable).parent / "markco"), "check-config",
                           str(PRODUCTION)], capture_output=True, text=True, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout and "compute: docker" in done.stdout


def test_its_images_are_the_ones_setup_podman_builds() -> None:
    options = docker_options()
    built = {recipe.role: recipe.tag for recipe in localimage.recipes(f"{INSTALL_DIR}/.venv")}
    assert options.runtime_image == built["runtime"] == localimage.RUNTIME_TAG
    assert options.editor_image == built["editor"] == localimage.EDITOR_TAG


def test_its_mounts_are_what_print_config_prints_for_the_documented_checkout() -> None:
    if os.path.realpath(sys.base_prefix) != "/usr":
        pytest.skip(f"this venv's Python is {sys.base_prefix}, not the system's: --print-config "
                    "would add its base mount (scripts/bootstrap prefers /usr/bin/python3)")
    here = localimage.dev_mounts(ROOT / ".venv")
    expected = [mount.replace(str(ROOT), INSTALL_DIR) for mount in here]
    assert docker_options().mounts == expected


def test_its_mounts_cover_what_the_images_run_from() -> None:
    options = docker_options()
    needed = localimage.host_paths_needed({"Config": {
        "Labels": {localimage.LABEL_ROLE: "runtime"},
        "Env": [f"PATH={INSTALL_DIR}/.venv/bin:/usr/local/bin:/usr/bin:/bin"]}})
    assert needed == ["/usr", f"{INSTALL_DIR}/.venv"]
    assert localimage.unmounted(needed, options.host_mounts) == []
