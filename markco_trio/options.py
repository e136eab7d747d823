"""Typed validation of configuration sections.

A section's schema is a dataclass (the core's sections and every plugin's). `parse_options`
turns a TOML table into an instance of it, or raises `ConfigError` naming the file, the section
and the key: unknown keys (with a suggestion), wrong types, missing required keys.

Secrets are fields typed `Secret`. Their value never lives in the config file: the file names an
environment variable (`<key>_env = "VAR"`) or a file (`<key>_file = "/run/secrets/x"`), and the
value is read when the configuration is loaded, so a missing secret stops the daemon at start-up
with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from .errors import ConfigError

T = TypeVar("T")


class Secret:
    """A secret value read from the environment or a file. Its repr never shows the value."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        """The secret itself: call this only where it is used, never to log it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret(from {self.source})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SecretResolver:
    """Reads `*_env` and `*_file` secrets. Paths are relative to the config file's folder."""

    def __init__(self, environ: Mapping[str, str] | None = None,
                 base_dir: Path | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.base_dir = base_dir or Path.cwd()

    def from_env(self, var: str, where: str) -> Secret:
        """The value of environment variable `var`; `where` names the key for errors."""
        value = self.environ.get(var)
        if value is None or value == "":
            raise ConfigError(f"{where}: environment variable {var} is not set "
                              f"(export it, or use a *_file key instead)")
        return Secret(value, f"${var}")

    def from_file(self, path: str, where: str) -> Secret:
        """The stripped content of file `path`; `where` names the key for errors."""
        full = (self.base_dir / path) if not os.path.isabs(path) else Path(path)
        try:
            value = full.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read secret file {full}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"{where}: secret file {full} is empty")
        return Secret(value, str(full))


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is str:
        return "a string"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if origin is list:
        return f"a list of {_type_name(get_args(tp)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a table"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _convert(tp: Any, value: Any, where: str, ctx: _Ctx) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        last: ConfigError | None = None
        for arg in args:
            try:
                return _convert(arg, value, where, ctx)
            except ConfigError as exc:
                last = exc
        assert last is not None
        raise last
    if tp is Any:
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_describe(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_describe(value)}")
        return float(value)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
        (item_tp,) = get_args(tp)
        return [_convert(item_tp, v, f"{where}[{i}]", ctx) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {_describe(value)}")
        _, val_tp = get_args(tp)
        return {k: _convert(val_tp, v, f"{where}.{k}", ctx) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {_describe(value)}")
        return _parse(tp, value, where, ctx)
    raise ConfigError(f"{where}: unsupported option type {tp!r} (a plugin bug)")


class _Ctx:
    def __init__(self, secrets: SecretResolver) -> None:
        self.secrets = secrets


def _parse(cls: type[T], table: Mapping[str, Any], where: str, ctx: _Ctx) -> T:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    secret_fields = {name for name in fields if _is_secret(hints[name])}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        key_where = f"{where} {key}"
        if key in secret_fields:
            raise ConfigError(
                f"{key_where}: secrets never live in the config file; set {key}_env = \"VAR\" "
                f"(an environment variable) or {key}_file = \"/path\" instead")
        base, _, suffix = key.rpartition("_")
        if base in secret_fields and suffix in ("env", "file"):
            if base in values:
                raise ConfigError(f"{where}: give {base}_env or {base}_file, not both")
            if not isinstance(raw, str) or not raw:
                raise ConfigError(f"{key_where}: expected a non-empty string, got {_describe(raw)}")
            values[base] = (ctx.secrets.from_env(raw, key_where) if suffix == "env"
                            else ctx.secrets.from_file(raw, key_where))
            continue
        if key not in fields:
            known = sorted(set(fields) - secret_fields) + sorted(
                f"{s}_env" for s in secret_fields) + sorted(f"{s}_file" for s in secret_fields)
            hint = difflib.get_close_matches(key, known, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else (
                f" (known keys: {', '.join(known)})" if known else " (this section takes no keys)")
            raise ConfigError(f"{where}: unknown key {key!r}{suggestion}")
        values[key] = _convert(hints[key], raw, key_where, ctx)
    for name, f in fields.items():
        if name in values:
            continue
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if name in secret_fields:
                raise ConfigError(f"{where}: missing secret {name}: set {name}_env or {name}_file")
            raise ConfigError(f"{where}: missing required key {name!r}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _is_secret(tp: Any) -> bool:
    if tp is Secret:
        return True
    if get_origin(tp) in (Union, types.UnionType):
        return any(a is Secret for a in get_args(tp))
    return False


def parse_options(cls: type[T], table: Mapping[str, Any] | None, where: str,
                  secrets: SecretResolver | None = None) -> T:
    """Validate `table` against dataclass `cls`. `where` prefixes every error, e.g.
    `"config/local.toml: [storage.sqlite]"`. Dataclass `__post_init__` may raise ValueError to
    reject a value; the message is reported with `where`."""
    return _parse(cls, table or {}, where, _Ctx(secrets or SecretResolver()))


def describe_options(cls: type[Any]) -> list[tuple[str, str, str]]:
    """(key, type, default) rows for documentation and `markco check-config --explain`."""
    hints = get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_secret(tp):
            rows.append((f"{f.name}_env / {f.name}_file", "secret", "required"
                         if f.default is dataclasses.MISSING else "optional"))
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "required"
        rows.append((f.name, _type_name(tp), default))
    return rows


__all__ = ["Secret", "SecretResolver", "parse_options", "describe_options"]
