"""A Python that the process backend's unprivileged workloads can run, for tests and benchmarks.

When the daemon runs as root, the process backend runs workloads as `run_as` (default `nobody`).
That account must be able to execute the runtime (`mrmd-python`), the editor and their
interpreter. On a machine where the project's virtual environment is built on an interpreter
inside `/root` (pyenv, mode 0700), it cannot. `workload_python(base)` then makes a small
virtual environment on the system interpreter of the SAME minor version, which imports the
project environment's packages (a `.pth` that adds its site-packages, editable installs
included), with console scripts of its own. When the current interpreter is already reachable,
it is used as it is.
"""

from __future__ import annotations

import importlib.metadata
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ..builtin.process_backend.launch import unreachable_part


@dataclass(frozen=True)
class WorkloadPython:
    """Where the interpreter and the console scripts are."""

    python: str
    bin_dir: str

    def script(self, name: str) -> str:
        """The path of console script `name` (e.g. `mrmd-python`)."""
        return str(Path(self.bin_dir) / name)


def _reachable(path: str, uid: int, gid: int) -> bool:
    return unreachable_part(os.path.realpath(path), uid, gid, execute=True) is None


def workload_python(base: Path, *, run_as: str = "nobody",
                    scripts: tuple[str, ...] = ("mrmd-python", "markco-editor"),
                    ) -> WorkloadPython:
    """A Python (and `scripts`) runnable by `run_as`; `base` must be traversable by it."""
    current = WorkloadPython(sys.executable, str(Path(sys.executable).parent))
    if os.geteuid() != 0:
        return current
    entry = pwd.getpwnam(run_as)
    if _reachable(sys.executable, entry.pw_uid, entry.pw_gid):
        return current
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(f"python{version}", path="/usr/local/bin:/usr/bin:/bin")
    if system is None:
        raise RuntimeError(f"no system python{version} for {run_as} to run workloads with")
    venv = base / "workload-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_dir = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})
                    ["purelib"])
    host_sites = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # `import` lines of a .pth file run at start-up; addsitedir also reads the .pth files
    # there (editable installs), which a plain path line would not.
    (site_dir / "markco-host-env.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in sorted(host_sites)))
    bin_dir = venv / "bin"
    for name in scripts:
        found = [ep for ep in importlib.metadata.entry_points(group="console_scripts")
                 if ep.name == name]
        if not found:
            continue
        module, _, attr = found[0].value.partition(":")
        target = bin_dir / name
        target.write_text(f"#!{python}\nimport sys\nfrom {module} import {attr.split('.')[0]}\n"
                          f"sys.exit({attr}())\n")
        target.chmod(0o755)
    os.chmod(base, 0o755)
    return WorkloadPython(str(python), str(bin_dir))
