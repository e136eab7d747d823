"""The docker backend relabels a Podman checkpoint archive as it streams it to a restore
(Podman 4.3 takes a restored container's labels from the archive's `config.dump`)."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections.abc import AsyncIterator

import pytest
from markco_docker.checkpointing import _with_labels, relabelled_config

SOURCE_LABELS = {"markco.deployment": "d", "markco.user": "alice", "markco.role": "runtime",
                 "markco.operation": "op-sleep", "markco.port": "8888",
                 "markco.image.role": "runtime", "vendor": "kept"}
WANTED = {"markco.deployment": "d", "markco.user": "alice", "markco.role": "runtime",
          "markco.operation": "op-fork", "markco.port": "9999", "markco.network": "n"}


def archive(config: dict[str, object], *, pax: bool = False) -> bytes:
    """A tar shaped like Podman's export: a directory, a small tar, config.dump, images."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w",
                      format=tarfile.PAX_FORMAT if pax else tarfile.USTAR_FORMAT) as tar:
        def add(name: str, data: bytes | None) -> None:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                if pax:
                    info.pax_headers = {"comment": "x"}
                tar.addfile(info, io.BytesIO(data))

        add("artifacts", None)
        add("devshm-checkpoint.tar", b"\0" * 1536)
        add("config.dump", json.dumps(config).encode())
        add("checkpoint", None)
        add("checkpoint/pages-1.img", bytes(range(256)) * 3000)
    return out.getvalue()


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def streamed(data: bytes, size: int) -> bytes:
    out = bytearray()
    async for chunk in _with_labels(pieces(data, size), WANTED, logging.getLogger("test")):
        out += chunk
    return bytes(out)


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
                for m in tar.getmembers()}


def test_the_workloads_labels_replace_the_archives_but_the_images_and_the_port() -> None:
    config = json.loads(relabelled_config(json.dumps({"labels": SOURCE_LABELS, "x": 1}).encode(),
                                          WANTED))
    assert config["x"] == 1
    assert config["labels"] == {**WANTED, "markco.port": "8888", "markco.image.role": "runtime",
                                "vendor": "kept"}


@pytest.mark.parametrize("size", [7, 512, 4096, 1 << 20])
async def test_config_dump_is_relabelled_in_the_stream_whatever_the_chunks(size: int) -> None:
    original = archive({"labels": SOURCE_LABELS, "name": "n"})
    out = members(await streamed(original, size))
    before = members(original)
    assert json.loads(out["config.dump"])["labels"]["markco.operation"] == "op-fork"
    assert {k: v for k, v in out.items() if k != "config.dump"} == {
        k: v for k, v in before.items() if k != "config.dump"}


async def test_an_archive_not_walked_here_passes_unchanged() -> None:
    pax = archive({"labels": SOURCE_LABELS}, pax=True)
    assert await streamed(pax, 1000) == pax
    assert await streamed(b"not a tar at all" * 100, 64) == b"not a tar at all" * 100
