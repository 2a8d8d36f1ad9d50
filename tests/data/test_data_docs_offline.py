import hashlib
import json
import re
from pathlib import Path

import great_expectations
import pytest

from pipeline.core.errors import PipelineError
from pipeline.data.data_docs_offline import ASSETS, CDN, EXTRA, make_offline, rewrite

BOOTSTRAP_JS = "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js"
LOGO = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png"
PAGE = f"""<html><head>
<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>
<script src="{BOOTSTRAP_JS}" integrity="sha384-JjSmVgyd0p3pXB1rRibZUAYoIIy6OrQ6VrjIEaFf/nJGzIxFDsf4x0xIM+B07jRM" crossorigin="anonymous"></script>
<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>
<style>.brand {{ background: url('https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/full_logo_dark.png') }}</style>
</head><body><a href="https://greatexpectations.io">GX</a><img class="NO-CACHE" src="{LOGO}?d=20261127T101010Z"/>
</body></html>"""  # noqa: E501


def loaded(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)="([^"]+)"|url\('([^']+)'\)""", html)


def test_a_page_loads_local_copies_only_and_keeps_its_links(tmp_path):
    folder = tmp_path / "data_docs"
    page = folder / "validations" / "files_suite" / "run" / "result.html"
    page.parent.mkdir(parents=True)
    page.write_text(PAGE)
    (folder / "static" / "images").mkdir(parents=True)
    (folder / "static" / "images" / "logo-long.png").write_bytes(b"png")  # GX writes its own logo there
    make_offline(folder)
    html = page.read_text()
    paths = [href or url for href, url in loaded(html) if not (href or url).startswith("https://greatexpectations.io")]
    assert len(paths) == 5 and all(p.startswith("../../../static/") for p in paths)
    assert all((page.parent / p).is_file() for p in paths), paths
    assert '<a href="https://greatexpectations.io">' in html  # a link to the web is a link, not a load
    assert "integrity" not in html and "crossorigin" not in html  # a file:// page cannot load crossorigin


@pytest.mark.parametrize(
    "tag",
    [
        '<script src="https://cdn.example.org/chart@9/chart.min.js"></script>',
        '<script src="https://cdn.example.org/chart@9/chart.min.js" integrity="sha384-AAAA"></script>',
        '<link rel="stylesheet" href="//cdn.example.org/chart@9/chart.min.js">',
        "<style>td { background: url(https://cdn.example.org/chart@9/chart.min.js) }</style>",
    ],
)
def test_a_cdn_url_with_no_local_copy_is_an_error_naming_it(tag):
    with pytest.raises(PipelineError) as error:
        rewrite(f"<html><head>{tag}</head></html>", ".", "index.html")
    message = str(error.value)
    assert "cdn.example.org/chart@9/chart.min.js" in message and "index.html" in message and "\n" not in message


def test_a_local_copy_that_is_not_the_file_gx_pins_is_an_error():
    tag = f'<script src="{BOOTSTRAP_JS}" integrity="sha384-AAAA" crossorigin="anonymous"></script>'
    with pytest.raises(PipelineError, match="not the file GX pins"):
        rewrite(tag, ".", "index.html")


def test_every_url_in_the_installed_gx_templates_has_a_local_copy():
    """A GX upgrade that adds a CDN file fails here, before any page is built."""
    views = Path(great_expectations.__file__).parent / "render" / "view"
    pages = [*views.glob("templates/*.j2"), *views.glob("static/styles/*.css")]
    seen = [url for page in pages for url in re.findall(r"https://[^\s\"')]+", page.read_text()) if url in CDN]
    assert set(seen) == set(CDN)  # and every vendored URL is still used
    for page in pages:
        rewrite(page.read_text(), ".", page.name)  # raises on a URL without a copy


def test_the_vendored_files_are_the_recorded_ones_each_package_with_its_licence():
    record = json.loads((ASSETS / "VENDORED.json").read_text())
    assert record["cdn"] == CDN
    recorded = {f"{package}/{name}" for package, entry in record["packages"].items() for name in entry["files"]}
    assert set(CDN.values()) | set(EXTRA) <= recorded
    on_disk = {p.relative_to(ASSETS).as_posix() for p in ASSETS.rglob("*") if p.is_file()} - {"VENDORED.json"}
    assert on_disk == recorded
    for package, entry in record["packages"].items():
        assert entry["tarball"].startswith("https://registry.npmjs.org/") and entry["integrity"].startswith("sha512-")
        assert any(re.match(r"(?i)licen[cs]e|package\.json", name) for name in entry["files"]), package
        for name, sha256 in entry["files"].items():
            assert hashlib.sha256((ASSETS / package / name).read_bytes()).hexdigest() == sha256, name
    assert sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file()) < 2_500_000
