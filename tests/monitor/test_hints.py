"""Hints from executed code, by its imports and calls (parsed, not regex-searched): the
original's cases, plus what a regex got wrong (comments, strings, aliases, earlier cells)."""

from __future__ import annotations

import pytest

from markco_trio.builtin.monitor.hints import MAX_CODE, Analyser


def gpu(code: str) -> bool:
    return bool(Analyser().analyse(code).gpu)


def big(code: str) -> bool:
    return bool(Analyser().analyse(code).big_ram)


@pytest.mark.parametrize("code", [
    "import torch",
    "from tensorflow.keras import layers",
    "import jax",
    "from jax import numpy as jnp",  # the original's regex missed `from jax`
    "import cupy as cp",
    "model.cuda()",
    'tensor.to("cuda")',
    "tensor.to(device='cuda:0')",
    "import torch\ndev = torch.device('cuda')",
    "!pip install torch torchvision",
    "!uv pip install torch",
    "%pip install -q 'tensorflow>=2.15'",
])
def test_gpu_libraries_and_calls_hint_a_gpu(code: str) -> None:
    assert gpu(code)
    assert not big(code)


@pytest.mark.parametrize("code", [
    "import pandas as pd\ndf = pd.read_csv('big.csv')",
    "pd.read_parquet('data.parquet')",  # conventional alias, imported in an earlier cell
    "import polars as pl\npl.scan_parquet('x/*.parquet').collect()",
    "import pyarrow.parquet as pq\nt = pq.read_table('t.parquet')",
    "import dask.dataframe as dd",
    "from pandas import read_feather\nread_feather('f.feather')",
])
def test_big_data_readers_hint_big_ram(code: str) -> None:
    assert big(code)
    assert not gpu(code)


@pytest.mark.parametrize("code", [
    "x = 1 + 2",
    "# import torch\nprint('no gpu here')",
    "print('import torch; model.cuda()')",
    "s = 'pd.read_csv(\"huge.csv\")'",
    "import torchish",  # the original's prefix regex took it for torch
    "import numpy as np\nnp.loadtxt('a.txt')",
    "def f(:\n  import torch",  # not Python: no hint, no exception
    "!echo pip install torch",
])
def test_comments_strings_and_lookalikes_hint_nothing(code: str) -> None:
    hints = Analyser().analyse(code)
    assert not hints.gpu and not hints.big_ram


def test_an_alias_from_an_earlier_cell_is_remembered() -> None:
    analyser = Analyser()
    assert not analyser.analyse("import polars as frames").big_ram
    assert analyser.analyse("frames.read_csv('a.csv')").big_ram == ("polars.read_csv()",)


def test_code_with_both_hints_both() -> None:
    hints = Analyser().analyse("import torch\nimport pandas as pd\npd.read_csv('x.csv')")
    assert hints.gpu == ("import torch",)
    assert hints.big_ram == ("pandas.read_csv()",)


def test_a_literal_path_known_to_be_small_is_no_hint() -> None:
    sizes = {"small.csv": 10_000, "large.csv": 3 << 30}
    analyser = Analyser(file_size=sizes.get, big_file_bytes=100 << 20)
    assert not analyser.analyse("import pandas as pd\npd.read_csv('small.csv')").big_ram
    assert analyser.analyse("pd.read_csv('large.csv')").big_ram
    assert analyser.analyse("pd.read_csv(path)").big_ram  # unknown: a hint


def test_an_oversized_cell_is_not_analysed() -> None:
    assert not Analyser().analyse("import torch\n" + "x = 1\n" * (MAX_CODE // 6)).gpu
