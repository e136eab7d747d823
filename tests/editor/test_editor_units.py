"""The editor's pure parts: the event-stream decoder and the settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from markco_editor.settings import EditorSettings, SettingsError
from markco_editor.sse import SSEDecoder, SSEEvent, encode_event


def decode(text: str) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [decoder.feed_line(line) for line in text.split("\n")]
    return [e for e in events if e is not None]


def test_sse_events_dispatch_on_a_blank_line_with_their_name_and_data() -> None:
    assert decode('event: stdout\ndata: {"a": 1}\n\nevent: done\ndata: {}\n\n') == [
        SSEEvent("stdout", '{"a": 1}'),
        SSEEvent("done", "{}"),
    ]


def test_sse_data_lines_join_and_comments_are_ignored() -> None:
    assert decode(": keep-alive\ndata: one\ndata:two\n\n") == [SSEEvent("message", "one\ntwo")]


def test_sse_encoding_round_trips() -> None:
    assert decode(encode_event("x", "a\nb").decode()) == [SSEEvent("x", "a\nb")]


def test_settings_defaults_run_standalone(tmp_path: Path) -> None:
    settings = EditorSettings.from_environ({"MARKCO_USER_DIR": str(tmp_path)})
    assert (settings.host, settings.port, settings.base_path) == ("127.0.0.1", 8080, "/")
    assert settings.user_dir == tmp_path.resolve()
    assert not settings.runtime_configured and not settings.cloud_mode


def test_settings_read_the_contract(tmp_path: Path) -> None:
    settings = EditorSettings.from_environ(
        {"CLOUD_MODE": "1", "HOST": "0.0.0.0", "PORT": "7000", "BASE_PATH": "/u/alice",
         "MARKCO_USER_DIR": str(tmp_path), "MARKCO_RUNTIME_SOCKET": "/run/rt.sock",
         "CLOUD_USER_ID": "alice", "CLOUD_USER_USERNAME": "al"}
    )
    assert settings.base_path == "/u/alice/"  # the trailing slash is added
    assert settings.runtime_socket == "/run/rt.sock" and settings.cloud_mode
    assert settings.owner.display_name == "al"


@pytest.mark.parametrize(
    ("name", "value"),
    [("PORT", "eighty"), ("PORT", "70000"), ("RUNTIME_PORT", "0"), ("BASE_PATH", "/u/../x/"),
     ("BASE_PATH", 'u/"x'), ("MARKCO_USER_DIR", "/no/such/dir")],
)
def test_a_bad_setting_is_refused_naming_the_variable(
    tmp_path: Path, name: str, value: str
) -> None:
    env = {"MARKCO_USER_DIR": str(tmp_path), name: value}
    with pytest.raises(SettingsError, match=name):
        EditorSettings.from_environ(env)
