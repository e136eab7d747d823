"""The user's directory, scaffolded on first start: `Projects/`, and a `Scratch` project with
its `mrmd.md` and a welcome notebook holding a python block. Files are written only when
missing (a user's edits are never overwritten) and given to the workloads' account.

The daemon runs this as root in a directory the user's code writes to, so nothing here follows
a link (`markco_trio.userdirs`): each directory is opened from its parent's held fd with
`O_NOFOLLOW`, files are created with `O_EXCL` (which never follows one), ownership is given with
`fchown` on the open fd. A planted symlink (`Projects -> /etc`) stops the scaffold at that
point: nothing is created or chowned through it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ... import userdirs

log = logging.getLogger("markco.compute")

SCRATCH_CONFIG = """\
---
title: Scratch
visibility: private
session:
  python:
    venv: .venv
    cwd: .
    name: default
    auto_start: true
---

# Scratch

Your notes and experiments. This project is private: set `visibility: public` above to
publish it.
"""

WELCOME = """\
# Welcome, {name}

This is a notebook: Markdown, with code blocks you can run. Run the block below — it executes
in your own Python runtime, which keeps its variables between blocks.

```python
import platform, sys
greeting = "hello from Python " + platform.python_version()
print(greeting)
```

Your files live in `Projects/`. Each folder with a `mrmd.md` is a project.
"""


def scaffold(user_dir: Path, *, display_name: str, owner: tuple[int, int] | None) -> list[Path]:
    """Create what is missing; return what was created. Blocking: run it in a thread."""
    created: list[Path] = []
    files = {
        "mrmd.md": SCRATCH_CONFIG,
        "01-welcome.md": WELCOME.format(name=display_name or "there"),
    }
    existed = user_dir.is_dir()
    with userdirs.open_user_dir(user_dir, owner=owner) as top:
        if not existed:
            created.append(user_dir)
        held: list[int] = []
        try:
            fd, path = top, user_dir
            for name in ("Projects", "Scratch"):
                fd, made = userdirs.ensure_dir(name, dir_fd=fd, mode=0o700, owner=owner)
                held.append(fd)
                path = path / name
                if made:
                    created.append(path)
            for name, text in files.items():
                if userdirs.create_file(name, text.encode("utf-8"), dir_fd=fd, mode=0o600,
                                        owner=owner):
                    created.append(path / name)
        except userdirs.UnsafePath as exc:
            log.warning("compute: not scaffolding %s further: %s (a link or a file where a "
                        "directory belongs; left as it is)", user_dir, exc.strerror)
        finally:
            for fd in held:
                os.close(fd)
    return created
