"""Hints from executed code: does it use a GPU library, does it read big data?

The code a user runs through the runtime front is parsed (`ast`), not searched with regular
expressions: comments and strings never count (`# import torch` is not a GPU hint), and what
counts is what the code imports and calls:

- GPU (`gpu-hint`): importing torch, tensorflow, jax, cupy, RAPIDS (cudf, cuml, cugraph),
  pycuda or triton; calling `.cuda()`; `.to("cuda")` / `.to(device="cuda:0")`;
  `torch.device("cuda")`; a `!pip install torch` (or `%pip`, `uv pip`) line.
- Big data (`big-ram-hint`): a reader of pandas, polars, pyarrow or dask called
  (`pd.read_csv(...)`, `pl.read_parquet`, `pyarrow.parquet.read_table`, `dask.dataframe.*`,
  ...); importing `dask.dataframe`. When the reader is given a literal path that `file_size`
  can measure and it is smaller than `big_file_bytes`, it is not a hint.

Names are resolved through the imports the user made — in this cell or an earlier one (an
`Analyser` is kept per user) — and through the conventional aliases (`pd`, `pl`, `pa`, `pq`,
`dd`, `tf`, `cp`) when the import was not seen. Pure: no I/O except through `file_size`.
"""

from __future__ import annotations

import ast
import shlex
from collections.abc import Callable
from dataclasses import dataclass

GPU_MODULES = frozenset({"torch", "tensorflow", "jax", "jaxlib", "cupy", "cudf", "cuml",
                         "cugraph", "pycuda", "triton"})
GPU_PACKAGES = GPU_MODULES | {"tensorflow-gpu", "torchvision", "torchaudio", "jax[cuda]",
                              "cupy-cuda12x", "cupy-cuda11x", "nvidia-cudnn-cu12"}
DATA_MODULES = frozenset({"pandas", "polars", "pyarrow", "dask"})
READERS = frozenset({"read_csv", "read_parquet", "read_feather", "read_json", "read_excel",
                     "read_sql", "read_table", "read_orc", "read_hdf", "read_ipc",
                     "scan_csv", "scan_parquet", "scan_ipc", "dataset", "read_delta"})
CONVENTIONAL = {"pd": "pandas", "pl": "polars", "pa": "pyarrow", "pq": "pyarrow.parquet",
                "dd": "dask.dataframe", "tf": "tensorflow", "cp": "cupy", "jnp": "jax.numpy"}
MAX_CODE = 64 * 1024  # bigger cells are not analysed (parsing is bounded work)


@dataclass(frozen=True)
class Hints:
    """Why the code hints at a GPU and at big data (empty: no hint)."""

    gpu: tuple[str, ...] = ()
    big_ram: tuple[str, ...] = ()


class Analyser:
    """Hints of one user's successive cells (it remembers their imports)."""

    def __init__(self, *, file_size: Callable[[str], int | None] | None = None,
                 big_file_bytes: int = 100 << 20) -> None:
        self.aliases: dict[str, str] = {}
        self._file_size = file_size
        self._big_file_bytes = big_file_bytes

    def analyse(self, code: str) -> Hints:
        """The hints of one executed cell."""
        if len(code) > MAX_CODE:
            return Hints()
        gpu: list[str] = []
        big: list[str] = []
        python_lines = []
        for line in code.splitlines():
            stripped = line.lstrip()
            if stripped.startswith(("!", "%")):
                gpu.extend(_shell_gpu(stripped.lstrip("!%")))
                python_lines.append(line[:len(line) - len(stripped)] + "pass")
            else:
                python_lines.append(line)
        try:
            tree = ast.parse("\n".join(python_lines))
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            # A user's code may be deliberately deep ("not not ... a"): CPython's parser then
            # raises MemoryError/RecursionError. No hint, never an error for the monitor.
            return Hints(tuple(dict.fromkeys(gpu)), ())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self.aliases[alias.asname or alias.name.split(".")[0]] = \
                        alias.name if alias.asname else alias.name.split(".")[0]
                    self._imported(alias.name, gpu, big)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                    self._imported(f"{node.module}.{alias.name}", gpu, big)
            elif isinstance(node, ast.Call):
                self._call(node, gpu, big)
        return Hints(tuple(dict.fromkeys(gpu)), tuple(dict.fromkeys(big)))

    def _imported(self, module: str, gpu: list[str], big: list[str]) -> None:
        top = module.split(".")[0]
        if top in GPU_MODULES:
            gpu.append(f"import {module}")
        if module.startswith("dask.dataframe"):
            big.append(f"import {module}")

    def _resolve(self, node: ast.expr) -> str | None:
        """`pd.read_csv` → `pandas.read_csv` through the aliases; None if not a dotted name."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        base = self.aliases.get(node.id) or CONVENTIONAL.get(node.id) or node.id
        return ".".join([base, *reversed(parts)])

    def _call(self, node: ast.Call, gpu: list[str], big: list[str]) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "cuda":
            gpu.append(".cuda()")
        elif isinstance(func, ast.Attribute) and func.attr == "to" and _names_cuda(node):
            gpu.append('.to("cuda")')
        name = self._resolve(func)
        if name is None:
            return
        top = name.split(".")[0]
        if name == "torch.device" and _names_cuda(node):
            gpu.append('torch.device("cuda")')
        last = name.rsplit(".", 1)[-1]
        if top in DATA_MODULES and (last in READERS or name.startswith("dask.dataframe.")):
            if not self._small_file(node):
                big.append(f"{name}()")

    def _small_file(self, node: ast.Call) -> bool:
        """The reader's literal path is a file known to be small."""
        if self._file_size is None or not node.args:
            return False
        first = node.args[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            return False
        size = self._file_size(first.value)
        return size is not None and size < self._big_file_bytes


def _names_cuda(node: ast.Call) -> bool:
    values = [*node.args, *(k.value for k in node.keywords if k.arg in (None, "device"))]
    return any(isinstance(v, ast.Constant) and isinstance(v.value, str) and
               v.value.split(":")[0] == "cuda" for v in values)


def _shell_gpu(command: str) -> list[str]:
    """`pip install torch torchvision` (a `!` or `%pip` line) → a reason when it installs a
    GPU package."""
    try:
        words = shlex.split(command)
    except ValueError:
        return []
    if words[:2] == ["uv", "pip"]:
        words = words[1:]
    elif len(words) > 2 and words[0].startswith("python") and words[1:3] == ["-m", "pip"]:
        words = words[2:]
    if len(words) < 2 or words[0] not in ("pip", "pip3") or words[1] != "install":
        return []
    packages = [w for w in words[2:] if not w.startswith("-")]
    found = []
    for package in packages:
        name = package.lower()
        for sep in "<>=!~;@ ":
            name = name.split(sep)[0]
        if name in GPU_PACKAGES or name.split("[")[0] in GPU_MODULES:
            found.append(f"pip install {name}")
    return found
