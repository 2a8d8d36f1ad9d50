"""The documentation: the MkDocs site builds with every link and anchor resolved, and every link of
the README points at a file and a heading that exist."""

import os
import re
import subprocess
import sys

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


def test_the_site_builds_strictly(tmp_path):
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")]
    quiet = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, env=quiet)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "model" / "index.html").is_file()
    assert "fonts.googleapis" not in (tmp_path / "site" / "index.html").read_text()  # offline: no web fonts


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
