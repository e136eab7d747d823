"""Rendering Markdown on the server: CommonMark, tables, code classes, escaping, titles."""

from __future__ import annotations

from markco_trio.builtin.publish.markdown import page_title, render_markdown


def html(text: str) -> str:
    return render_markdown(text).html


def test_commonmark_renders() -> None:
    assert html("# Title\n\nSome *emphasis* and `code`.\n") == (
        '<h1 id="title">Title</h1>\n<p>Some <em>emphasis</em> and <code>code</code>.</p>\n')


def test_tables_render_with_alignment_as_classes_not_styles() -> None:
    out = html("| a | b |\n|:--|--:|\n| 1 | 2 |\n")
    assert "<table>" in out and '<th class="align-left">a</th>' in out
    assert '<td class="align-right">2</td>' in out
    assert "style=" not in out  # inline styles would be blocked by the page's CSP


def test_fenced_code_carries_its_language_class() -> None:
    assert '<pre><code class="language-python">' in html("```python\nx = 1\n```\n")


def test_raw_html_is_escaped() -> None:
    out = html('<script>alert("x")</script>\n\n<img src=x onerror=alert(1)>\n')
    assert "<script" not in out and "<img" not in out
    assert "&lt;script&gt;" in out


def test_a_closing_script_tag_in_text_or_code_is_escaped() -> None:
    out = html("text </script><script>alert(1)</script>\n\n```\n</script>\n```\n")
    assert "</script>" not in out and "<script>" not in out


def test_dangerous_link_schemes_are_not_links() -> None:
    out = html("[x](javascript:alert(1)) [y](vbscript:x) [z](data:text/html,<b>)\n")
    assert "href" not in out


def test_strikethrough_renders() -> None:
    assert "<s>gone</s>" in html("~~gone~~\n")


def test_headings_get_unique_ids() -> None:
    out = html("# Setup\n## Setup\n## Content\n")
    assert 'id="setup"' in out and 'id="setup-2"' in out
    assert 'id="content-2"' in out  # `content` is the page layout's own id


def test_relative_links_go_through_the_rewriter() -> None:
    out = render_markdown("[a](b.md) ![i](c.png) [x](https://e.org)\n",
                          rewrite_link=lambda href: "/new/" + href).html
    assert 'href="/new/b.md"' in out and 'src="/new/c.png"' in out
    assert 'href="/new/https://e.org"' in out  # the rewriter decides; fsml keeps absolute ones


def test_front_matter_is_not_rendered_and_gives_the_title() -> None:
    rendered = render_markdown("---\ntitle: From front matter\ntags: x\n---\n# Heading\n")
    assert "tags" not in rendered.html
    assert rendered.title == "From front matter"


def test_the_title_is_the_first_level_one_heading() -> None:
    assert page_title("Intro text\n\n## Sub\n\n# The *Title*\n\n# Second\n") == "The Title"


def test_a_comment_in_a_code_fence_is_not_a_title() -> None:
    text = "```python\n# not a title\nx = 1\n```\n\n# Real title\n"
    assert page_title(text) == "Real title"
    assert page_title("```\n# only code\n```\n") is None


def test_a_setext_heading_is_a_title() -> None:
    assert page_title("My Title\n========\n") == "My Title"
