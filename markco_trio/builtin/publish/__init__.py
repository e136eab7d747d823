"""The built-in `publish` plugin: projects as web pages at `/@<username>/<project>[/<page>]`.

Serves `<data_dir>/users/<userId>/Projects/<project>` when its `mrmd.md` opts in
(`visibility: public` in its front matter), or to whoever `project.read` is authorised for
(owner, a viewer grant, an admin); to anyone else a project is exactly as absent as a missing
one. DESIGN §6; the file rules are the original's (see `fsml`).

URL scheme:
- pages: `/@alice/notes/getting-started/installation` — folder and page slugs (numeric
  prefixes and `.md` dropped, case-insensitive); `/@alice/notes` is the project's home page
  (its `index.md`, else its first page); a folder URL shows its `index.md`, else its first page;
- assets: any non-page file by its folders' slugs and its exact name
  (`/@alice/notes/getting-started/diagram.png`), and anything in an `_assets` folder by its
  path (`/@alice/notes/_assets/logo.svg`, the original's route); relative links and images in
  the Markdown are rewritten to these URLs;
- `/@alice`: the projects of alice that the visitor may read.

The modules: `fsml` (the pure file rules), `frontmatter`, `request_path`, `markdown` and
`page` (rendering), `mediatypes`, `headers` and `conditional` (HTTP semantics), `disk` (the only
filesystem access: no symlinks), `cache`, `publisher` (the core) and `routes` (the blueprint).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...hookspecs import ConfigSection, hookimpl
from .options import PublishOptions

if TYPE_CHECKING:
    from ...context import PluginContext

__all__ = ["PublishOptions", "markco_config_sections", "markco_web_routes"]


@hookimpl
def markco_config_sections() -> list[ConfigSection]:
    """Declare `[publish]`."""
    return [ConfigSection(name="publish", options=PublishOptions,
                          description="published projects at /@<username>/<project>")]


@hookimpl
def markco_web_routes(ctx: PluginContext) -> list[Any]:
    """The `/@...` blueprint, configured by `[publish]` (defaults when the section is absent)."""
    from .routes import make_blueprint  # Quart is imported only when the API app is built

    options = ctx.config.sections.get("publish")
    if not isinstance(options, PublishOptions):
        options = PublishOptions()
    return [make_blueprint(ctx, options)]
