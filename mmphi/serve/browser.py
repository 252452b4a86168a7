"""Drive the Gradio app in a real headless browser (Playwright + the system's Chromium), like a user.

Used by the browser test and by ``scripts/screenshot_app.py``. Playwright's own browser download is
never used: the Debian ``chromium`` at ``/usr/bin/chromium`` is launched with flags that keep it
off the network (no component updates, no sync, no background fetches).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = os.environ.get("MMPHI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

_BOT_ROWS = "#chat .message-row.bot-row"
# Records every text the last answer bubble shows, so a caller can check the answer streamed in.
_WATCH_ANSWER = """() => {
  window.__mmphiSeen = [];
  const record = () => {
    const bots = document.querySelectorAll('#chat .message-row.bot-row');
    const last = bots[bots.length - 1];
    const text = last ? last.innerText.trim() : '';
    const seen = window.__mmphiSeen;
    if (text && seen[seen.length - 1] !== text) seen.push(text);
  };
  new MutationObserver(record).observe(document.querySelector('#chat'),
                                       {subtree: true, childList: true, characterData: true});
}"""


@dataclass
class Exchange:
    """What the page showed for one question."""

    answer: str
    heard: str
    status: str
    partial_answers: list[str] = field(default_factory=list)  # successive texts of the answer bubble


@contextmanager
def chromium_page(width: int = 1280, height: int = 1000) -> Iterator:
    """A Playwright page in headless system Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def open_app(page, url: str, timeout_s: float = 60.0) -> None:
    """Load the app and wait until it has rendered (Gradio builds the page in the browser)."""
    page.goto(url)
    page.locator("#send").wait_for(timeout=timeout_s * 1000)


def ask(page, question: str = "", image: str | Path | None = None, audio: str | Path | None = None,
        timeout_s: float = 60.0) -> Exchange:
    """Attach the files, type the question, press Send and wait until the app reports the answer done."""
    if image is not None:
        page.locator("#image input[type=file]").set_input_files(str(image))
        page.locator("#image img").first.wait_for(timeout=timeout_s * 1000)  # uploaded and previewed
    if audio is not None:
        page.locator("#audio input[type=file]").set_input_files(str(audio))
        page.locator("#audio #duration").first.wait_for(timeout=timeout_s * 1000)  # uploaded, waveform drawn
    if question:
        page.locator("#question textarea").fill(question)
    page.evaluate(_WATCH_ANSWER)
    rows_before = page.locator(_BOT_ROWS).count()
    page.locator("#send").click()
    # Done when a new answer row exists and the status line shows the outcome. Both change in the same
    # update at the start (status "thinking…"), so the old status cannot be mistaken for the new one.
    page.wait_for_function(
        """([selector, before]) => { const s = document.querySelector('#status');
               return document.querySelectorAll(selector).length > before && s
                      && /tokens in|^error/.test(s.innerText.trim()); }""",
        arg=[_BOT_ROWS, rows_before], timeout=timeout_s * 1000)
    bots = page.locator(_BOT_ROWS)
    answer = bots.last.inner_text().strip() if bots.count() else ""
    return Exchange(answer=answer, heard=page.locator("#heard textarea").input_value(),
                    status=page.locator("#status").inner_text().strip(),
                    partial_answers=page.evaluate("() => window.__mmphiSeen || []"))
