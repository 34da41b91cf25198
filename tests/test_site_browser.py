"""The built website in a real browser (headless Chromium driven by Playwright).

Over every page: mathematics typeset by the locally served MathJax (no raw TeX delimiters left,
no MathJax error), every image loaded, every internal link and anchor resolving, theorem and
lemma cross-references resolved; the search page finds "Hessian"; at a 1280 px wide window no
code cell of a chapter (its input or its output) scrolls sideways. A screenshot of one chapter is
saved under ``_build/screenshots`` for the record. Needs Chromium on the ``PATH`` (``make test``
installs Debian's package when it is missing) or one named by the environment variable ``CHROMIUM``.
"""

from __future__ import annotations

import functools
import http.server
import os
import pathlib
import shutil
import threading
import time
import urllib.parse
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RAW_TEX = ("$$", "\\(", "\\)", "\\[", "\\]", "\\begin{", "\\frac", "\\mathbb", "\\operatorname")


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("no Chromium found: run make test (it installs Debian's chromium) or set CHROMIUM=/path")
    return path


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)


@functools.cache
def ids_of(path: pathlib.Path) -> frozenset[str]:
    parser = _Ids()
    parser.feed(path.read_text(errors="replace"))
    return frozenset(parser.ids)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def server(built_site: tuple[pathlib.Path, str]) -> Iterator[tuple[str, pathlib.Path]]:
    html, _ = built_site
    handler = functools.partial(QuietHandler, directory=str(html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", html
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def site_pages(html: pathlib.Path) -> list[str]:
    pages = [str(p.relative_to(html)) for p in html.rglob("*.html")
             if not {"_static", "_sources", "_images"} & set(p.relative_to(html).parts)]
    return sorted(p for p in pages if p not in ("genindex.html", "index.html"))


VISIBLE_TEXT_JS = """() => {
  const main = document.querySelector('main') || document.body;
  const clone = main.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container, .highlight, .cell_input, .output')
       .forEach(e => e.remove());
  return clone.textContent;
}"""

MATHJAX_DONE_JS = """async () => {
  if (!window.MathJax) return 'absent';
  for (let i = 0; i < 200 && !(MathJax.startup && MathJax.startup.promise); i++)
    await new Promise(r => setTimeout(r, 50));
  await MathJax.startup.promise;
  return 'typeset';
}"""


def test_every_page_renders_in_chromium(server: tuple[str, pathlib.Path], browser) -> None:
    base, html = server
    pages = site_pages(html)
    assert "book/notation.html" in pages and "book/ledger.html" in pages
    problems: list[str] = []
    math_pages = 0
    xrefs = 0
    start = time.perf_counter()
    page = browser.new_page()
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    for rel in pages:
        response = page.goto(f"{base}/{rel}", wait_until="load")
        if response is None or response.status != 200:
            problems.append(f"{rel}: HTTP {None if response is None else response.status}")
            continue
        if page.evaluate(MATHJAX_DONE_JS) == "typeset":
            math_pages += 1
            rendered = page.locator("mjx-container").count()
            if rendered == 0:
                problems.append(f"{rel}: MathJax loaded but typeset nothing")
        if page.locator("mjx-merror, [data-mjx-error]").count():
            problems.append(f"{rel}: MathJax error: {page.locator('mjx-merror').first.inner_text()[:120]}")
        text = page.evaluate(VISIBLE_TEXT_JS)
        for delimiter in RAW_TEX:
            if delimiter in text:
                i = text.index(delimiter)
                problems.append(f"{rel}: raw TeX {delimiter!r} left in the text: …{text[max(0, i - 40):i + 40]!r}…")
        broken = page.evaluate("() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))"
                               ".map(i => i.getAttribute('src'))")
        problems += [f"{rel}: image did not load: {src}" for src in broken]
        for href, text_ in page.evaluate("() => [...document.querySelectorAll('a[href]')]"
                                         ".map(a => [a.getAttribute('href'), a.textContent.trim()])"):
            parsed = urllib.parse.urlparse(href)
            if parsed.scheme or href.startswith(("mailto:", "//", "javascript:")):
                continue
            target = (html / rel).parent / urllib.parse.unquote(parsed.path) if parsed.path else html / rel
            target = target.resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.append(f"{rel}: link {href!r} points to a missing file")
                continue
            if parsed.fragment and target.suffix == ".html" and parsed.fragment not in ids_of(target):
                problems.append(f"{rel}: link {href!r} points to a missing anchor")
            if parsed.fragment.startswith(("lem-", "thm-", "prop-", "def-", "cor-")):
                xrefs += 1
                if not text_ or "?" in text_:
                    problems.append(f"{rel}: cross-reference {href!r} rendered as {text_!r}")
    page.close()
    elapsed = time.perf_counter() - start
    print(f"{len(pages)} pages, {math_pages} with typeset mathematics, {xrefs} statement cross-references, "
          f"{elapsed:.1f} s")
    assert not problems, "\n".join(problems)
    assert math_pages >= 2, "MathJax typeset fewer than two pages: is it served from _static/mathjax?"
    assert xrefs > 0, "no theorem/lemma cross-reference found on any page"
    mathjax_errors = [m for m in console_errors if "mathjax" in m.lower()]
    assert not mathjax_errors, mathjax_errors


PAGE_WIDTH_PX = 1280

# Every box of a code cell that could scroll sideways: the input's and the outputs' <pre>, and any
# output element the theme lets scroll (overflow-x auto or scroll), e.g. wide tables or formulas.
SIDEWAYS_SCROLL_JS = """async () => {
  await document.fonts.ready;
  const found = [];
  let measured = 0;
  const cells = [...document.querySelectorAll('div.cell')];
  cells.forEach((cell, i) => {
    const input = cell.querySelector('.cell_input pre');
    const first = input ? input.textContent.split('\\n')[0].slice(0, 50) : '';
    const boxes = new Set(cell.querySelectorAll('.cell_input pre, .cell_output pre'));
    cell.querySelectorAll('.cell_output *').forEach(e => {
      if (['auto', 'scroll'].includes(getComputedStyle(e).overflowX)) boxes.add(e);
    });
    boxes.forEach(e => {
      measured++;
      if (e.scrollWidth > e.clientWidth + 1) {
        const longest = Math.max(...e.textContent.split('\\n').map(l => l.length));
        found.push({cell: i + 1, part: e.closest('.cell_input') ? 'input' : 'output',
                    tag: e.tagName.toLowerCase(), scroll: e.scrollWidth, client: e.clientWidth,
                    longest: longest, first: first});
      }
    });
  });
  return {cells: cells.length, measured: measured, found: found};
}"""


def test_no_code_cell_scrolls_sideways(server: tuple[str, pathlib.Path], browser, root: pathlib.Path) -> None:
    """At a 1280 px wide window, no input or output box of any chapter's code cells scrolls sideways."""
    base, html = server
    chapters = sorted(f"book/{p.stem}.html" for p in (root / "book").glob("*.ipynb"))
    missing = [rel for rel in chapters if not (html / rel).is_file()]
    assert not missing, f"chapters without a page in the built site: {missing}"
    page = browser.new_page(viewport={"width": PAGE_WIDTH_PX, "height": 900})
    offenders: list[str] = []
    cells = measured = 0
    for rel in chapters:
        page.goto(f"{base}/{rel}", wait_until="load")
        result = page.evaluate(SIDEWAYS_SCROLL_JS)
        cells += result["cells"]
        measured += result["measured"]
        offenders += [f"{rel} code cell {f['cell']} ({f['first']!r}): {f['part']} <{f['tag']}> is {f['scroll']} px "
                      f"wide in a {f['client']} px box (longest line {f['longest']} characters)"
                      for f in result["found"]]
    page.close()
    print(f"{len(chapters)} chapters, {cells} code cells, {measured} boxes measured at {PAGE_WIDTH_PX} px")
    assert cells > 0 and measured > 0, "no code cell found on any chapter page: has the theme's markup changed?"
    if offenders:
        pytest.fail(f"{len(offenders)} code-cell boxes scroll sideways at a {PAGE_WIDTH_PX} px wide window:\n"
                    + "\n".join(offenders), pytrace=False)


def test_mathjax_is_served_locally(server: tuple[str, pathlib.Path]) -> None:
    _, html = server
    notation = (html / "book" / "notation.html").read_text()
    assert '_static/mathjax/tex-chtml.js' in notation and "cdn" not in notation.lower().split("mathjax")[0][-200:]
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()


def test_search_finds_hessian(server: tuple[str, pathlib.Path], browser, root: pathlib.Path) -> None:
    base, _ = server
    page = browser.new_page()
    page.goto(f"{base}/search.html?q=Hessian", wait_until="load")
    page.wait_for_selector("#search-results ul.search li", timeout=30_000)
    results = page.locator("#search-results ul.search li").all_inner_texts()
    assert results, "search for 'Hessian' returned nothing"
    page.goto(f"{base}/book/notation.html", wait_until="load")
    page.evaluate(MATHJAX_DONE_JS)
    shots = root / "_build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "notation.png"), full_page=False)
    page.close()
    assert (shots / "notation.png").stat().st_size > 10_000
