"""Configuration: two-phase loading, typed validation, secrets outside the file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from markco_trio.config import load_config
from markco_trio.errors import ConfigError
from markco_trio.options import Secret, SecretResolver, describe_options, parse_options

ROOT = Path(__file__).resolve().parent.parent


def test_the_embedded_default_config_is_valid() -> None:
    config, _ = load_config(ROOT / "config" / "local.toml")
    assert config.roles["storage"].names == ("sqlite",)
    assert config.server.listen == "127.0.0.1:3000"
    assert config.data_dir == (ROOT / "data").resolve()


def test_an_unknown_key_is_named_with_its_file_and_section(
        write_config: Callable[[str], Path]) -> None:
    path = write_config('[storage]\nprovider = "sqlite"\n[storage.sqlite]\npaht = "x.db"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "[storage.sqlite]" in message and "'paht'" in message
    assert "did you mean 'path'" in message


def test_an_unknown_key_in_a_core_section_is_refused(write_config: Callable[[str], Path]) -> None:
    path = write_config('[server]\nlisten = "127.0.0.1:0"\nlisen = "x"\n')
    with pytest.raises(ConfigError, match=r"\[server\]: unknown key 'lisen'"):
        load_config(path)


def test_a_value_of_the_wrong_type_names_the_key(write_config: Callable[[str], Path]) -> None:
    path = write_config('[storage.sqlite]\nreaders = "four"\n')
    with pytest.raises(ConfigError, match=r"\[storage.sqlite\] readers: expected an integer"):
        load_config(path)


def test_a_bad_value_is_refused_with_the_reason(write_config: Callable[[str], Path]) -> None:
    path = write_config('[server]\nlisten = "nowhere"\n')
    with pytest.raises(ConfigError, match=r"\[server\].*listen: expected HOST:PORT"):
        load_config(path)


def test_an_unknown_section_points_at_a_missing_plugin(write_config: Callable[[str], Path]) -> None:
    path = write_config('[kubernetes]\nnamespace = "x"\n')
    with pytest.raises(ConfigError, match=r"unknown section \[kubernetes\]: no loaded plugin"):
        load_config(path)


def test_an_unknown_provider_lists_the_known_ones(write_config: Callable[[str], Path]) -> None:
    path = write_config('[storage]\nprovider = "oracle"\n')
    with pytest.raises(ConfigError, match=r"no storage provider named 'oracle' \(known: .*sqlite"):
        load_config(path)


def test_a_disabled_builtin_provider_cannot_be_chosen(write_config: Callable[[str], Path]) -> None:
    path = write_config('[plugins]\ndisable = ["sqlite"]\n[storage]\nprovider = "sqlite"\n')
    with pytest.raises(ConfigError, match="no storage provider named 'sqlite'"):
        load_config(path)


def test_invalid_toml_names_the_file_and_line(write_config: Callable[[str], Path]) -> None:
    path = write_config('[server]\nlisten = "127.0.0.1:0"\ndata_dir = "d"\n[logging\n')
    with pytest.raises(ConfigError, match=r"markco.toml: not valid TOML.*line 4"):
        load_config(path)


@dataclass(frozen=True)
class _WithSecret:
    client_id: str
    client_secret: Secret


def test_a_secret_comes_from_the_environment() -> None:
    options = parse_options(_WithSecret, {"client_id": "x", "client_secret_env": "GH_SECRET"},
                            "f: [oauth.github]", SecretResolver({"GH_SECRET": "s3cret"}))
    assert options.client_secret.reveal() == "s3cret"
    assert "s3cret" not in repr(options)


def test_a_secret_comes_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("from-a-file\n")
    options = parse_options(_WithSecret, {"client_id": "x", "client_secret_file": "secret.txt"},
                            "f: [oauth.github]", SecretResolver({}, base_dir=tmp_path))
    assert options.client_secret.reveal() == "from-a-file"


def test_a_missing_secret_variable_names_the_key_and_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        parse_options(_WithSecret, {"client_id": "x", "client_secret_env": "NOPE"},
                      "f: [oauth.github]", SecretResolver({}))
    assert "client_secret_env" in str(info.value) and "NOPE is not set" in str(info.value)


def test_a_secret_written_in_the_config_file_is_refused() -> None:
    with pytest.raises(ConfigError, match="secrets never live in the config file"):
        parse_options(_WithSecret, {"client_id": "x", "client_secret": "plain"}, "f: [x]",
                      SecretResolver({}))


def test_a_required_secret_that_is_absent_is_refused() -> None:
    with pytest.raises(ConfigError, match="missing secret client_secret"):
        parse_options(_WithSecret, {"client_id": "x"}, "f: [x]", SecretResolver({}))


def test_options_can_be_described_for_documentation() -> None:
    rows = describe_options(_WithSecret)
    assert ("client_id", "a string", "required") in rows
    assert any(key.startswith("client_secret_env") for key, _, _ in rows)


def test_the_production_example_is_valid_given_its_secrets() -> None:
    config, _ = load_config(ROOT / "config" / "production.toml",
                            environ={"MARKCO_DATABASE_URL": "postgresql://m@127.0.0.1/m",
                                     "MARKCO_GITHUB_CLIENT_SECRET": "not-a-real-secret"})
    assert config.roles["storage"].names == ("postgres",)
    assert config.roles["compute"].names == ("docker",)
    assert config.roles["oauth"].names == ("github",)


def test_the_production_example_names_its_missing_secret() -> None:
    with pytest.raises(ConfigError, match="dsn_env: environment variable MARKCO_DATABASE_URL"):
        load_config(ROOT / "config" / "production.toml", environ={})
