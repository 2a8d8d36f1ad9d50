"""The documentation: the MkDocs site builds with every link and anchor resolved, renders styled in
a browser with no network, and every link of the README points at a file and a heading that exist."""

import functools
import http.server
import os
import re
import subprocess
import sys
import threading

import pytest

from tests.servers import free_port, offline_page
from tests.synthetic import PROJECT


def slug(title: str) -> str:
    """A heading's anchor, as MkDocs (Python-Markdown's toc) and GitHub make it."""
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", title).strip().lower())


def headings(path) -> set[str]:
    anchors, fenced = set(), False
    for line in path.read_text().splitlines():
        fenced ^= line.startswith("```")
        if not fenced and re.match(r"#{1,6} ", line):
            anchors.add(slug(line.lstrip("#").strip()))
    return anchors


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site as `make docs` builds it (strict: a broken link or anchor fails the build)."""
    folder = tmp_path_factory.mktemp("docs") / "site"
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(folder)]
    quiet = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, env=quiet)
    assert done.returncode == 0, done.stderr
    return folder


def test_the_site_builds_strictly(site):
    assert (site / "model" / "index.html").is_file()
    assert "fonts.googleapis" not in (site / "index.html").read_text()  # offline: no web fonts


def test_a_list_straight_under_a_line_of_text_renders_as_a_list_as_on_github(site):
    paragraphs = [(page.parent.name, text) for page in site.rglob("*.html")
                  for text in re.findall(r"<p>(.*?)</p>", page.read_text(), re.S)]  # fmt: skip
    assert [(page, text[:60]) for page, text in paragraphs if re.search(r"^- ", text, re.M)] == []
    assert "What it says:</p>\n<ul>\n<li><strong>" in (site / "benchmarks" / "index.html").read_text()


def test_the_site_renders_styled_with_no_network_and_its_navigation_and_images_work(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    local = f"http://127.0.0.1:{server.server_port}/"
    try:
        with offline_page(local) as (page, web):
            page.goto(local, wait_until="load")
            header = page.locator("header.md-header").evaluate("e => getComputedStyle(e).position")
            demo = page.locator("img[src$='demo.png']").evaluate("e => e.complete && e.naturalWidth")
            page.locator("nav.md-nav--primary a.md-nav__link", has_text="Your own images").first.click()
            page.wait_for_url("**/your-own-images/", wait_until="load")
            title = page.locator("article h1").first.inner_text().rstrip("¶")  # its permalink sign
    finally:
        server.shutdown()
    assert header == "sticky"  # Material's own stylesheet is applied (unstyled, a header is static)
    assert demo > 0 and title == "Your own images"  # the picture loaded; the navigation led to the page
    assert web == []  # nothing was asked of the network


def test_every_link_of_the_readme_resolves():
    readme = (PROJECT / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert len(local) > 15
    for link in local:
        path, _, anchor = link.partition("#")
        target = PROJECT / path
        assert target.exists(), link
        assert not anchor or anchor in headings(target), link
    assert "docs/guide.md" not in readme


def test_anchors_come_from_headings_not_from_code_blocks(tmp_path):
    page = tmp_path / "page.md"
    page.write_text('# A page\n\n```\n# not a heading\n```\n\n## Saying "I don\'t know"\n')
    assert headings(page) == {"a-page", "saying-i-dont-know"}  # the code block's comment is no heading


def test_make_docs_builds_the_site_and_make_docs_serve_serves_it_on_loopback():
    def commands(target: str) -> str:
        return subprocess.run(["make", "-n", target], cwd=PROJECT, capture_output=True, text=True, check=True).stdout

    assert "mkdocs build --strict" in commands("docs")
    assert "mkdocs serve -a 127.0.0.1:" in commands("docs-serve")
    ignored = subprocess.run(["git", "check-ignore", "-q", "site/index.html"], cwd=PROJECT)
    assert ignored.returncode == 0  # the built site is not committed
