"""The local development images: built on this machine, with no registry.

No image registry is reachable where markco is developed and tested, so the runtime and editor
images are a tiny root filesystem — usrmerge symlinks, an unprivileged user in /etc/passwd,
/tmp — imported with `podman import`. Everything else comes from the HOST at run time, mounted
read-only: /usr, the Python the virtual environment was made from, the virtual environment
itself (mrmd-python, markco-editor) and the sources of editable installs. `dev_mounts()` lists
those mounts; `[compute.docker] mounts` must carry them (`--print-config` prints the section).
Deployments with a registry build real images instead (the README has the Dockerfile).

The tar is byte-for-byte reproducible (fixed owners, modes and times, sorted), and its hash,
with the image configuration, is stamped on the image as a label: a build is skipped when an
image with the same content already exists.

    python -m markco_docker.localimage [--venv .venv] [--user 65532:65532] [--print-config]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .options import DEFAULT_USER, WORKLOAD_UID

LABEL_CONTENT = "markco.image.content"
LABEL_ROLE = "markco.image.role"
RUNTIME_TAG = "localhost/markco-runtime:dev"
EDITOR_TAG = "localhost/markco-editor:dev"
WORKSPACE = "/workspace"
RECIPE_VERSION = "2"  # bump when the rootfs recipe changes in a way the tar does not show


@dataclass(frozen=True)
class ImageRecipe:
    """One image: its tag, its role, its command and the rootfs/config it is built from."""

    tag: str
    role: str
    command: tuple[str, ...]
    stop_signal: str
    venv: str
    uid: int
    gid: int

    def changes(self) -> list[str]:
        """The Dockerfile-style instructions `podman import --change` applies."""
        return [
            f"USER {self.uid}:{self.gid}",
            f"WORKDIR {WORKSPACE}",
            f"ENV PATH={self.venv}/bin:/usr/local/bin:/usr/bin:/bin",
            "ENV HOME=/tmp",
            "ENV PYTHONDONTWRITEBYTECODE=1",
            f"STOPSIGNAL {self.stop_signal}",
            f"CMD {json.dumps(list(self.command))}",
            f"LABEL {LABEL_ROLE}={self.role}",
        ]

    def content_hash(self, rootfs: bytes) -> str:
        """What the image is made of: the rootfs bytes and the configuration."""
        digest = hashlib.sha256(rootfs)
        digest.update(json.dumps([RECIPE_VERSION, self.changes()]).encode())
        return digest.hexdigest()[:32]


def recipes(venv: str, uid: int = WORKLOAD_UID, gid: int = WORKLOAD_UID) -> list[ImageRecipe]:
    """The runtime image (mrmd-python) and the editor image (markco-editor)."""
    return [
        ImageRecipe(tag=RUNTIME_TAG, role="runtime",
                    command=("mrmd-python", "--foreground", "--managed", "--host", "0.0.0.0",
                             "--port", "8888", "--cwd", WORKSPACE),
                    stop_signal="SIGKILL", venv=venv, uid=uid, gid=gid),
        ImageRecipe(tag=EDITOR_TAG, role="editor", command=("markco-editor",),
                    stop_signal="SIGTERM", venv=venv, uid=uid, gid=gid),
    ]


def rootfs_tar(uid: int = WORKLOAD_UID, gid: int = WORKLOAD_UID) -> bytes:
    """The root filesystem: usrmerge symlinks into the (mounted) /usr, a passwd with an
    unprivileged `markco` user, world-writable sticky /tmp, empty mount points."""
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = []

    def directory(name: str, mode: int = 0o755, owner: tuple[int, int] = (0, 0)) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, mode
        info.uid, info.gid = owner
        entries.append((info, None))

    def symlink(name: str, target: str) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
        entries.append((info, None))

    def file(name: str, text: str, mode: int = 0o644) -> None:
        data = text.encode()
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), mode
        entries.append((info, data))

    # No /root: the engine creates mount points' parents (0755), and a Python installed under
    # /root (pyenv) must stay reachable for the unprivileged user.
    for name in ("dev", "etc", "home", "proc", "run", "sys", "usr", "var"):
        directory(name)
    directory("tmp", 0o1777)
    directory("var/tmp", 0o1777)
    directory("home/markco", 0o755, (uid, gid))
    directory(WORKSPACE.lstrip("/"), 0o755, (uid, gid))
    for link in ("bin", "sbin", "lib", "lib64"):
        symlink(link, f"usr/{link}")
    file("etc/passwd", f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
                       f"markco:x:{uid}:{gid}:markco:/home/markco:/usr/sbin/nologin\n"
                       "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    file("etc/group", f"root:x:0:\nmarkco:x:{gid}:\nnogroup:x:65534:\n")
    file("etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n")
    # Mount points the engine fills in (it bind-mounts its own over them).
    for name in ("etc/hosts", "etc/hostname", "etc/resolv.conf"):
        file(name, "")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in sorted(entries, key=lambda entry: entry[0].name):
            info.mtime = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _venv_facts(venv: Path) -> dict[str, str | None]:
    """What the venv's own Python says about itself: its base installation, and where the
    editor package lives (outside the venv for an editable install)."""
    script = (
        "import json, os, sys, importlib.util\n"
        "spec = importlib.util.find_spec('markco_editor')\n"
        "origin = os.path.dirname(spec.origin) if spec and spec.origin else None\n"
        "print(json.dumps({'base_prefix': sys.base_prefix, 'editor': origin}))\n")
    done = subprocess.run([str(venv / "bin" / "python"), "-c", script], capture_output=True,
                          text=True, check=True)
    facts: dict[str, str | None] = json.loads(done.stdout)
    return facts


def dev_mounts(venv: Path) -> list[str]:
    """The read-only host mounts the local images need (`[compute.docker] mounts`): /usr, the
    base Python when it lives elsewhere (pyenv...), the venv, and an editable editor's source."""
    venv = venv.absolute()
    facts = _venv_facts(venv)
    paths = ["/usr"]
    base = os.path.realpath(facts["base_prefix"] or "/usr")
    if base != "/usr" and not base.startswith("/usr/"):
        paths.append(base)
    paths.append(str(venv))
    editor = facts["editor"]
    if editor and not os.path.realpath(editor).startswith(os.path.realpath(venv) + os.sep):
        paths.append(os.path.realpath(editor))
    return [f"{path}:{path}:ro" for path in paths]


def host_paths_needed(image: Mapping[str, Any]) -> list[str]:
    """The host directories an image built here runs from (`/usr` and the virtual environment
    at the head of its PATH), from the engine's inspect answer; `[]` for any other image (one
    with everything inside needs no mount)."""
    config = image.get("Config") or {}
    labels = config.get("Labels") or image.get("Labels") or {}
    if LABEL_ROLE not in labels:
        return []
    paths = ["/usr"]
    for entry in config.get("Env") or []:
        if entry.startswith("PATH="):
            head = entry.removeprefix("PATH=").split(":")[0]
            if head.endswith("/bin") and head not in ("/usr/local/bin", "/usr/bin", "/bin"):
                paths.append(head.removesuffix("/bin"))
    return paths


def unmounted(paths: Sequence[str], mounts: Sequence[tuple[str, str, bool]]) -> list[str]:
    """Which of `paths` no mount `(source, target, read_only)` puts at the same place in the
    container (the local images expect the host's paths unchanged)."""
    def covered(path: str) -> bool:
        return any(source == target and (path == target or
                                         path.startswith(target.rstrip("/") + "/"))
                   for source, target, _ in mounts)

    return [path for path in paths if not covered(path)]


def _podman(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    podman = shutil.which("podman")
    if podman is None:
        raise RuntimeError("podman is not installed: run scripts/setup-podman (as root)")
    return subprocess.run([podman, *args], input=input, capture_output=True, check=False)


def image_content(tag: str) -> tuple[str, str | None] | None:
    """(image id, content label) of the local image `tag`; None when there is no such image."""
    done = _podman("image", "inspect", tag)
    if done.returncode != 0:
        return None
    try:
        data = json.loads(done.stdout)[0]
    except (ValueError, IndexError):
        return None
    labels = data.get("Labels") or (data.get("Config") or {}).get("Labels") or {}
    value = labels.get(LABEL_CONTENT)
    return str(data.get("Id", "")), (str(value) if value is not None else None)


def ensure_images(venv: Path, *, uid: int = WORKLOAD_UID, gid: int = WORKLOAD_UID,
                  force: bool = False) -> list[str]:
    """Build each local image unless one with the same content exists; return what was built."""
    venv_path = str(venv.absolute())
    rootfs = rootfs_tar(uid, gid)
    built = []
    for recipe in recipes(venv_path, uid, gid):
        content = recipe.content_hash(rootfs)
        existing = image_content(recipe.tag)
        if not force and existing is not None and existing[1] == content:
            continue
        args = ["import"]
        for change in [*recipe.changes(), f"LABEL {LABEL_CONTENT}={content}"]:
            args += ["--change", change]
        done = _podman(*args, "-", recipe.tag, input=rootfs)
        if done.returncode != 0:
            raise RuntimeError(f"podman import of {recipe.tag} failed: "
                               f"{done.stderr.decode(errors='replace').strip()}")
        if existing is not None and existing[0]:
            # The previous build lost its tag: drop it (refused, harmlessly, while a
            # container still uses it).
            _podman("image", "rm", existing[0])
        built.append(recipe.tag)
    return built


def config_section(venv: Path, *, user: str = DEFAULT_USER) -> str:
    """The `[compute.docker]` section for the local images."""
    mounts = ",\n".join(f'  "{mount}"' for mount in dev_mounts(venv))
    return (f'[compute]\nbackend = "docker"\n\n[compute.docker]\n'
            f'engine_url = "unix:///run/podman/podman.sock"\n'
            f'runtime_image = "{RUNTIME_TAG}"\neditor_image = "{EDITOR_TAG}"\n'
            f'user = "{user}"\n'
            f'# The local images run the host\'s /usr, Python and virtual environment:\n'
            f'mounts = [\n{mounts},\n]\n')


def main(argv: Sequence[str] | None = None) -> int:
    """Build the local images (skipping unchanged ones)."""
    parser = argparse.ArgumentParser(prog="python -m markco_docker.localimage",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--venv", default=os.environ.get("VIRTUAL_ENV") or
                        str(Path(sys.prefix)), help="the virtual environment to run")
    parser.add_argument("--user", default=DEFAULT_USER, help="UID:GID of the image's user")
    parser.add_argument("--force", action="store_true", help="rebuild even when unchanged")
    parser.add_argument("--print-config", action="store_true",
                        help="print the [compute.docker] section for these images")
    args = parser.parse_args(argv)
    uid, _, gid = args.user.partition(":")
    venv = Path(args.venv)
    try:
        built = ensure_images(venv, uid=int(uid), gid=int(gid or uid), force=args.force)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"localimage: {exc}", file=sys.stderr)
        return 1
    for tag in (RUNTIME_TAG, EDITOR_TAG):
        print(f"{tag}: {'built' if tag in built else 'up to date'}", file=sys.stderr)
    if args.print_config:
        print(config_section(venv, user=args.user))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
