"""Great Expectations' Data Docs that open with no network.

GX's pages load Bootstrap, jQuery, bootstrap-table, Vega and Font Awesome from CDNs: offline they
render unstyled and the index's table of validation runs stays empty. `make_offline(folder)` copies
the files vendored in `data_docs_assets/` (taken from the npm registry, each package with its
licence) into the Data Docs folder and points every page at them, so the folder works as file:// or
served. A CDN URL it has no copy of is an error naming the URL, never a silently broken page.

Re-vendor (after a GX upgrade changes its links): `python -m pipeline.data.data_docs_offline`. It
downloads each package's tarball from the npm registry, checks the registry's integrity hash, keeps
only the files below plus the licence, and records versions, URLs and hashes in `VENDORED.json`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import urllib.request
from pathlib import Path

from pipeline.core.errors import PipelineError, run_cli

ASSETS = Path(__file__).with_name("data_docs_assets")
VENDOR = "static/vendor"  # where the copies go inside the Data Docs folder
REGISTRY = "https://registry.npmjs.org"

# Every CDN URL of GX 1.x's page templates -> the npm package@version and the file it serves.
# `vega@5`, `vega-lite@5` and `vega-embed@6` are ranges on jsDelivr: pinned to the latest in range.
CDN = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css":
        "bootstrap@4.3.1/dist/css/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js":
        "bootstrap@4.3.1/dist/js/bootstrap.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery@3.7.1/dist/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js":
        "popper.js@1.12.9/dist/umd/popper.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css":
        "bootstrap-table@1.19.1/dist/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js":
        "bootstrap-table@1.19.1/dist/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker@1.9.0/dist/css/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker@1.9.0/dist/js/bootstrap-datepicker.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.min.css",  # minified: 150 kB, not 880
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css":
        "@fortawesome/fontawesome-free@6.6.0/css/all.min.css",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega@5.33.1/build/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite@5.23.0/build/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed@6.29.0/build/vega-embed.min.js",
}  # fmt: skip
# Files the vendored files load themselves: Font Awesome's fonts (woff2, which every current browser
# takes before the TrueType fallback its CSS also names).
EXTRA = [
    f"@fortawesome/fontawesome-free@6.6.0/webfonts/fa-{font}.woff2"
    for font in ("brands-400", "regular-400", "solid-900", "v4compatibility")
]
# GX's navbar logo comes from GX's web server; GX also writes it into the folder (no dark variant).
_GX_LOGOS = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
GX_OWN = {_GX_LOGOS + "logo-long.png": "static/images/logo-long.png",
          _GX_LOGOS + "full_logo_dark.png": "static/images/logo-long.png"}  # fmt: skip

_URL = r"(?:https?:)?//[^\"'()\s]+"
_TAG = re.compile(r"<(?!a[\s>])[a-z][^>]*>", re.IGNORECASE)  # every tag but <a>: links may point at the web
_TAG_URL = re.compile(rf"""\b(?:src|href|srcset|poster|data)\s*=\s*(["'])({_URL})\1""", re.IGNORECASE)
_CSS_URL = re.compile(rf"""(?:url\(\s*|@import\s+)(["']?)({_URL})\1""", re.IGNORECASE)
_SRI = re.compile(r"""\s+(integrity|crossorigin)\b(?:\s*=\s*(["'])([^"']*)\2)?""", re.IGNORECASE)


def make_offline(folder: Path) -> None:
    """Copy the vendored files into `folder/static/vendor` and point every HTML and CSS file of the
    Data Docs at them; raise PipelineError naming the first CDN URL that has no local copy."""
    vendor = folder / VENDOR
    shutil.copytree(ASSETS, vendor, dirs_exist_ok=True)
    for path in sorted([*folder.rglob("*.html"), *folder.rglob("*.css")]):
        if vendor in path.parents:
            continue
        text = path.read_text(encoding="utf-8")
        offline = rewrite(text, Path(os.path.relpath(folder, path.parent)).as_posix(), path.relative_to(folder))
        if offline != text:
            path.write_text(offline, encoding="utf-8")


def rewrite(text: str, root: str, page: Path | str) -> str:
    """`text` with every URL it loads from the web replaced by the local copy's path, relative to
    `root` (the Data Docs folder, as seen from the page)."""

    def local(url: str) -> str:
        bare = url.split("?", 1)[0]
        for key in (url, bare):
            if key in GX_OWN:
                return f"{root}/{GX_OWN[key]}"
            if key in CDN:
                return f"{root}/{VENDOR}/{CDN[key]}"
        raise PipelineError(
            f"Data Docs page {page} loads {url}, which has no offline copy: add it to CDN in "
            "pipeline/data/data_docs_offline.py and run `python -m pipeline.data.data_docs_offline`"
        )

    def tag(match: re.Match) -> str:
        html = match.group(0)
        copies = {m.group(2): local(m.group(2)) for m in _TAG_URL.finditer(html)}
        if not copies:
            return html
        pinned = [sri.group(3) for sri in _SRI.finditer(html) if sri.group(1).lower() == "integrity"]
        if pinned and pinned[0] not in {subresource_hash(CDN[url]) for url in copies if url in CDN}:
            raise PipelineError(f"Data Docs page {page}: the offline copy of {next(iter(copies))} is not the "
                                f"file GX pins by its hash ({pinned[0]})")  # fmt: skip
        # file:// pages have no origin: a crossorigin request to a local file is refused (checked in Chromium)
        html = _SRI.sub("", html)
        return _TAG_URL.sub(lambda m: m.group(0).replace(m.group(2), copies[m.group(2)]), html)

    text = _TAG.sub(tag, text)
    return _CSS_URL.sub(lambda m: m.group(0).replace(m.group(2), local(m.group(2))), text)


def subresource_hash(vendored: str) -> str:
    """The `integrity` value (sha384) of a vendored file."""
    digest = hashlib.sha384((ASSETS / vendored).read_bytes()).digest()
    return "sha384-" + base64.b64encode(digest).decode()


# Packages whose tarball has no licence file: vega's is the monorepo's, shipped by its sibling
# vega-view (bundled in vega.min.js); popper.js 1.12.9's is named by its package.json and quoted in
# its files' headers.
LICENCE_FROM = {"vega@5.33.1": "vega-view@5.16.1"}


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def _tarball(package: str) -> tuple[str, str, dict[str, bytes]]:
    """An npm package's tarball URL, integrity and files (paths without the top folder), checked
    against the registry's integrity hash."""
    name, _, version = package.rpartition("@")
    dist = json.loads(_fetch(f"{REGISTRY}/{name}/{version}"))["dist"]
    tarball = _fetch(dist["tarball"])
    algorithm, _, expected = dist["integrity"].partition("-")
    if base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode() != expected:
        raise PipelineError(f"{dist['tarball']} does not match the registry's integrity hash {dist['integrity']}")
    with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
        files = {m.name.split("/", 1)[1]: archive.extractfile(m).read()
                 for m in archive.getmembers() if m.isfile() and "/" in m.name}  # fmt: skip
    return dist["tarball"], dist["integrity"], files


def vendor(target: Path = ASSETS) -> dict:
    """Download the files of CDN and EXTRA from the npm registry into `target`, with each package's
    licence, and write `target/VENDORED.json`. Run by hand, never by the pipeline."""
    wanted: dict[str, list[str]] = {}
    for vendored in [*CDN.values(), *EXTRA]:
        package, inner = re.fullmatch(r"((?:@[^/]+/)?[^/]+)/(.+)", vendored).groups()
        wanted.setdefault(package, []).append(inner)
    shutil.rmtree(target, ignore_errors=True)
    record: dict = {"registry": REGISTRY, "cdn": CDN, "packages": {}}
    for package, names in sorted(wanted.items()):
        url, integrity, files = _tarball(package)
        licence_url, _, licence_files = _tarball(LICENCE_FROM[package]) if package in LICENCE_FROM else (url, 0, files)
        licences = sorted(n for n in licence_files if re.fullmatch(r"(?i)licen[cs]e(\.\w+)?", n)) or ["package.json"]
        kept = {name: files[name] for name in names} | {licences[0]: licence_files[licences[0]]}
        for name, data in kept.items():
            (target / package / name).parent.mkdir(parents=True, exist_ok=True)
            (target / package / name).write_bytes(data)
        record["packages"][package] = {
            "tarball": url, "integrity": integrity, "licence": f"{licences[0]} (from {licence_url})",
            "files": {name: hashlib.sha256(data).hexdigest() for name, data in kept.items()},
        }  # fmt: skip
    (target / "VENDORED.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    run_cli(vendor)
