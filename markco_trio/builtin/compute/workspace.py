"""The user's directory, scaffolded on first start: `Projects/`, and a `Scratch` project with
its `mrmd.md` and a welcome notebook holding a python block. Files are written only when
missing (a user's edits are never overwritten) and given to the workloads' account."""

from __future__ import annotations

import os
from pathlib import Path

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
    directories = [user_dir, user_dir / "Projects", user_dir / "Projects" / "Scratch"]
    for directory in directories:
        if not directory.is_dir():
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            created.append(directory)
    files = {
        user_dir / "Projects" / "Scratch" / "mrmd.md": SCRATCH_CONFIG,
        user_dir / "Projects" / "Scratch" / "01-welcome.md": WELCOME.format(
            name=display_name or "there"),
    }
    for path, text in files.items():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        created.append(path)
    if owner is not None:
        for path in created:
            os.lchown(path, *owner)
    return created
