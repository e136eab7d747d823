"""Front matter, and what `mrmd.md` says about publishing: public only by explicit opt-in."""

from __future__ import annotations

import pytest

from markco_trio.builtin.publish.frontmatter import read_settings, split_front_matter


def test_a_public_opt_in_is_read() -> None:
    settings = read_settings("---\ntitle: My notes\nvisibility: public\n---\n# Body\n")
    assert settings.public
    assert settings.title == "My notes"


@pytest.mark.parametrize("value", ['"public"', "'public'", "Public", "public   # yes"])
def test_quoted_cased_and_commented_values_are_understood(value: str) -> None:
    assert read_settings(f"---\nvisibility: {value}\n---\n").public


@pytest.mark.parametrize("text", [
    "",
    "# Settings\n\nvisibility: public\n",  # not front matter: the original's loose search
    "---\nvisibility: private\n---\n",
    "---\nname: x\n---\n",  # no visibility: private by default (the original: public)
    "---\nvisibility: public\n",  # never closed
    "\n---\nvisibility: public\n---\n",  # not on the first line
    "---\nvisibility: public\nvisibility: private\n---\n",  # duplicate key
    "---\nvisibility public\n---\n",  # not key: value
    "---\nusername: public\n---\n",  # the original's `name:` matched inside `username:`
])
def test_anything_but_a_clear_opt_in_is_private(text: str) -> None:
    assert not read_settings(text).public


def test_nested_yaml_and_comments_are_tolerated() -> None:
    text = ("---\n# settings\nsession:\n  python: 3.11\n  env: [a, b]\ntags:\n- x\n- y\n"
            "visibility: public\n---\n")
    assert read_settings(text).public


def test_crlf_and_a_byte_order_mark_are_accepted() -> None:
    assert read_settings("\ufeff---\r\nvisibility: public\r\n---\r\n").public


def test_the_body_after_front_matter_is_returned() -> None:
    fields, body = split_front_matter("---\ntitle: T\n...\n# Heading\n")
    assert fields == {"title": "T"}
    assert body == "# Heading\n"


def test_without_front_matter_the_whole_text_is_the_body() -> None:
    assert split_front_matter("# Title\n---\n") == (None, "# Title\n---\n")


def test_name_is_a_fallback_title_and_bad_languages_are_ignored() -> None:
    settings = read_settings("---\nname: Old name\nlang: <script>\n---\n")
    assert settings.title == "Old name"
    assert settings.lang == "en"
    assert read_settings("---\nlang: fr-CA\n---\n").lang == "fr-CA"
