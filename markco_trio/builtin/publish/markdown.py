"""Markdown to HTML on the server (markdown-it-py), and page titles.

CommonMark plus tables and strikethrough. Raw HTML in a note is ESCAPED (`html=False`): a
published page can never carry a script, whatever its author typed (the original inlined the
Markdown into a `<script>`, so `</script>` broke out of it). markdown-it also refuses
`javascript:`, `vbscript:`, `file:` and non-image `data:` links.

On top of the parser, three token rules:
- relative links and images are rewritten by a callable the caller passes (the file rules know
  where a link on disk ends up as a URL: `fsml.rewrite_link`);
- headings get `id`s, so `page#section` links work;
- table alignment becomes a class instead of a `style` attribute, which the page's
  Content-Security-Policy (styles by hash only) would block.

Titles come from the TOKENS, not from lines: a `# comment` inside a fenced code block is not a
heading (the original's bug: a Python comment became the page title).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token

from .frontmatter import split_front_matter

# Rewrites a link target (already normalised by markdown-it); None keeps it as written.
LinkRewriter = Callable[[str], str | None]

# Ids the page layout uses itself; a heading with one of these names gets a suffix.
RESERVED_IDS = frozenset({"content", "nav", "top"})
_ID_DROP = re.compile(r"[^\w\- ]+")
_ID_SPACES = re.compile(r"[\s]+")


def _text_of(inline: Token | None) -> str:
    """The plain text of an inline token (text and code spans, without markup)."""
    if inline is None or not inline.children:
        return inline.content.strip() if inline is not None else ""
    parts: list[str] = []
    for child in inline.children:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return " ".join("".join(parts).split())


def _heading_id(text: str) -> str:
    slug = unicodedata.normalize("NFKC", text).casefold()
    slug = _ID_SPACES.sub("-", _ID_DROP.sub("", slug).strip())
    return slug.strip("-_") or "section"


def _rule_heading_ids(state: StateCore) -> None:
    used: set[str] = set(RESERVED_IDS)
    tokens = state.tokens
    for i, token in enumerate(tokens):
        if token.type != "heading_open":
            continue
        base = _heading_id(_text_of(tokens[i + 1] if i + 1 < len(tokens) else None))
        ident, n = base, 1
        while ident in used:  # "Setup", "Setup" -> setup, setup-2 (and never a layout id)
            n += 1
            ident = f"{base}-{n}"
        used.add(ident)
        token.attrSet("id", ident)


def _rule_table_align(state: StateCore) -> None:
    for token in state.tokens:
        if token.type in ("th_open", "td_open"):
            style = token.attrGet("style")
            if isinstance(style, str) and style.startswith("text-align:"):
                token.attrs.pop("style", None)
                token.attrSet("class", "align-" + style.removeprefix("text-align:"))


def _rule_links(state: StateCore) -> None:
    rewrite: LinkRewriter | None = state.env.get("rewrite_link")
    for block in state.tokens:
        for token in block.children or ():
            if token.type == "link_open":
                attr = "href"
            elif token.type == "image":
                attr = "src"
                token.attrSet("loading", "lazy")
            else:
                continue
            value = token.attrGet(attr)
            if rewrite is not None and isinstance(value, str):
                new = rewrite(value)
                if new is not None:
                    token.attrSet(attr, new)


def _make_parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.core.ruler.push("markco_heading_ids", _rule_heading_ids)
    md.core.ruler.push("markco_table_align", _rule_table_align)
    md.core.ruler.push("markco_links", _rule_links)
    return md


# One parser for the process: configured once, then only read (rendering keeps its state in
# the per-call `env` and state objects, so worker threads can share it).
_MD = _make_parser()


@dataclass(frozen=True)
class RenderedMarkdown:
    """A page's HTML body and its title (None when the page has none)."""

    html: str
    title: str | None


def _first_h1(tokens: list[Token]) -> str | None:
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.tag == "h1":
            text = _text_of(tokens[i + 1] if i + 1 < len(tokens) else None)
            if text:
                return text
    return None


def page_title(text: str) -> str | None:
    """The title of a page: `title:` in its front matter, else its first level-1 heading."""
    fields, body = split_front_matter(text)
    if fields and fields.get("title", "").strip():
        return fields["title"].strip()
    return _first_h1(_MD.parse(body))


def render_markdown(text: str, *, rewrite_link: LinkRewriter | None = None) -> RenderedMarkdown:
    """Render a page (front matter removed) to HTML, with raw HTML escaped."""
    fields, body = split_front_matter(text)
    env: dict[str, Any] = {"rewrite_link": rewrite_link}
    tokens = _MD.parse(body, env)
    html = _MD.renderer.render(tokens, _MD.options, env)
    title = (fields or {}).get("title", "").strip() or _first_h1(tokens)
    return RenderedMarkdown(html=html, title=title)
