"""Server-sent events: decoding the runtime's stream and encoding the editor's own. No I/O."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SSEDecoder", "SSEEvent", "encode_comment", "encode_event"]


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event: its name (`message` when the stream gave none) and its data."""

    name: str
    data: str


class SSEDecoder:
    """Turns the lines of an event stream into events, following the HTML spec's rules:
    `event:` names, `data:` lines joined with newlines, a blank line dispatches, `:` comments
    and unknown fields are ignored."""

    def __init__(self) -> None:
        self._name = ""
        self._data: list[str] = []

    def feed_line(self, line: str) -> SSEEvent | None:
        """Feed one line (without its line ending); return the event a blank line completes."""
        if line == "":
            if not self._data and not self._name:
                return None
            event = SSEEvent(self._name or "message", "\n".join(self._data))
            self._name, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._name = value
        elif field == "data":
            self._data.append(value)
        return None


def encode_event(name: str, data: str) -> bytes:
    """One event on the wire; multi-line data becomes several `data:` lines."""
    lines = [f"event: {name}"]
    lines.extend(f"data: {part}" for part in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def encode_comment(text: str) -> bytes:
    """A comment line: ignored by clients, it keeps idle proxies from closing the stream."""
    return f": {text}\n\n".encode()
