"""The editor-specific steps of the journey, one small page object per editor, so the journey
reads the same whichever editor markco serves at `/u/<id>/`:

- `MrmdEditor`: the mrmd editor (markco-editor's default): files are opened from its picker
  ("Find file"); a notebook is a CodeMirror document whose python blocks have a "Run cell N"
  button, and each run writes an `output` block into the document under its cell.
- `BasicEditor`: the textarea editor (`MARKCO_EDITOR=basic`, or `/basic`): a file list, and a
  card per python block with a Run button and its output.

`editor_on(page)` tells which one the page is. Playwright's sync API (the journey runs it in a
worker thread).
"""

from __future__ import annotations

import re
from typing import Protocol

from playwright.sync_api import Page, expect

# Starting, waking and running take a while on a busy 2-core machine; the wait page reloads
# itself until the editor answers.
LOAD_MS = 120_000
RUN_MS = 60_000


# What Chromium answers a navigation with when the host's network changed meanwhile (other
# tests on this machine make and remove network namespaces and veth pairs): an error page
# (which Chromium then reloads by itself).
_NETWORK_CHANGED = ("ERR_NETWORK_CHANGED", "chrome-error://")


def goto(page: Page, url: str | None = None) -> None:
    """`page.goto(url)` (None: reload), again when Chromium saw the host's network change
    meanwhile."""
    for attempt in range(5):
        try:
            page.goto(url) if url is not None else page.reload()
            return
        except Exception as exc:
            if not any(s in str(exc) for s in _NETWORK_CHANGED) or attempt == 4:
                raise
            page.wait_for_timeout(500)


class EditorPage(Protocol):
    """What the journey does in an editor."""

    name: str

    def open_notebook(self, file_name: str) -> None:
        """Open the markdown file called `file_name` (anywhere in the user's files)."""

    def run_block(self, number: int) -> str:
        """Run the `number`th python block (from 1) of the open notebook; its output."""

    def add_block(self, code: str) -> int:
        """Append a python block holding `code` to the open notebook; its number."""


def editor_on(page: Page) -> EditorPage:
    """The page object for the editor `page` shows (waits for it to load)."""
    mrmd = page.get_by_role("button", name="Find file")
    basic = page.locator("textarea#source")
    expect(mrmd.or_(basic).first).to_be_visible(timeout=LOAD_MS)
    return BasicEditor(page) if basic.count() else MrmdEditor(page)


class MrmdEditor:
    """The mrmd editor."""

    name = "mrmd"

    def __init__(self, page: Page) -> None:
        self.page = page
        self.blocks = 0

    def open_notebook(self, file_name: str) -> None:
        for attempt in range(2):
            try:
                self._open_notebook(file_name)
                return
            except AssertionError:
                if attempt == 1:
                    raise
                # A script of the UI that failed to load (a network change mid-load) leaves
                # it half made ("mrmd is not defined"): load the page again, as a person would.
                self.page.evaluate("console.warn('journey: the notebook did not open; "
                                   "reloading the editor')")
                goto(self.page)

    def _open_notebook(self, file_name: str) -> None:
        search = self.page.locator("#file-search")
        for _ in range(LOAD_MS // 500):  # the picker opens by itself in some states
            if search.is_visible():
                break
            try:
                self.page.get_by_role("button", name="Find file").click(timeout=1_000)
            except Exception:  # covered by the picker as it opens by itself: look again
                pass
            self.page.wait_for_timeout(500)
        expect(search).to_be_visible()
        search.fill(file_name)
        picker = self.page.get_by_text(file_name, exact=True).first
        expect(picker).to_be_visible(timeout=LOAD_MS)
        # A cell run before the UI has attached the document's Python runtime produces an
        # empty output; the UI says so on its console only.
        registered: list[str] = []
        self.page.on("console", lambda m: registered.append(m.text)
                     if "Registered Python runtime" in m.text else None)
        picker.click()
        self.page.keyboard.press("Enter")
        expect(self.page.locator('button[aria-label="Run cell 1"]')).to_be_visible(
            timeout=LOAD_MS // 2)
        for _ in range(LOAD_MS // 100):
            if registered:
                break
            self.page.wait_for_timeout(100)
        assert registered, "the mrmd UI never attached a Python runtime to the notebook"
        self.blocks = self.page.locator(".cm-cell-controls-btn-play").count()

    def run_block(self, number: int) -> str:
        # One more click when a run ends with nothing printed: the UI can take a click made
        # as it attaches the runtime and run the cell nowhere (seen once in a dozen runs on a
        # loaded machine). The second click is noted on the page's console (console.log).
        for _ in range(2):
            output = self._run_once(number)
            if output not in ("", "No output"):
                return output
            self.page.evaluate("n => console.warn(`journey: cell ${n} printed nothing; "
                               "clicking Run again`)", number)
        raise AssertionError(f"cell {number} printed nothing, twice: {self._outputs()}")

    def _run_once(self, number: int) -> str:
        """Click the cell's Run; once its run is over (its play button is back and its output
        block has something, or RUN_MS have passed), the cell's output."""
        button = self.page.locator(f'button[aria-label="Run cell {number}"]')
        button.click()
        # The output lands in the document as a fenced `output:<exec id>` block under the
        # cell, shown as "No output" until the cell prints.
        output = ""
        for _ in range(RUN_MS // 200):
            self.page.wait_for_timeout(200)
            outputs = self._outputs()
            output = outputs[number - 1] if len(outputs) >= number else ""
            if button.is_visible() and output not in ("", "No output"):
                break
        return output

    def add_block(self, code: str) -> int:
        content = self.page.locator(".cm-content")
        content.click()
        self.page.keyboard.press("Control+End")
        self.page.keyboard.type(f"\n\n```python\n{code}\n```\n")
        self.blocks += 1
        expect(self.page.locator(f'button[aria-label="Run cell {self.blocks}"]')).to_be_visible(
            timeout=RUN_MS)
        return self.blocks

    def _outputs(self) -> list[str]:
        text = self.page.locator(".cm-content").inner_text()
        return [o.strip() for o in re.findall(r"```output:\S+\n+(.*?)\n*```", text, flags=re.S)]


class BasicEditor:
    """The textarea editor."""

    name = "basic"

    def __init__(self, page: Page) -> None:
        self.page = page

    def open_notebook(self, file_name: str) -> None:
        self.page.locator("#file-list a", has_text=file_name).first.click()
        expect(self.page.locator("#doc-path")).to_contain_text(file_name, timeout=LOAD_MS)
        expect(self.page.locator("#blocks .block").first).to_be_visible(timeout=LOAD_MS)

    def run_block(self, number: int) -> str:
        card = self.page.locator("#blocks .block").nth(number - 1)
        card.get_by_role("button", name="Run").click()
        expect(card.locator(".badge")).to_have_text(re.compile("ok|error"), timeout=RUN_MS)
        return card.locator(".out").inner_text().strip()

    def add_block(self, code: str) -> int:
        source = self.page.locator("textarea#source")
        source.fill(source.input_value() + f"\n```python\n{code}\n```\n")
        count = self.page.locator("#blocks .block")
        blocks = source.input_value().count("```python")
        expect(count).to_have_count(blocks, timeout=RUN_MS)
        return blocks
