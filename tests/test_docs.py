"""The repository carries its own docs: every relative link in README.md
(and in docs/) names a file inside the repository."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_AUTOLINK = re.compile(r"<([^>\s]*[/.][^>\s]*)>")
#: A path written as code that names a document: `../shared/DOMAIN.md`.
_CODE_DOC = re.compile(r"`([\w./-]+\.md)`")


def relative_links(text):
    links = _MARKDOWN_LINK.findall(text) + _AUTOLINK.findall(text) + _CODE_DOC.findall(text)
    return [link for link in links
            if not re.match(r"^[a-z][a-z0-9+.-]*:", link) and not link.startswith("#")]


def test_the_link_finder_sees_every_kind_of_link():
    text = ("see [a](docs/a.md#x), [b](https://example.org/b.md), <c/d.md>, "
            "`../shared/DOMAIN.md` and [e](#anchor)")
    assert relative_links(text) == ["docs/a.md#x", "c/d.md", "../shared/DOMAIN.md"]


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_every_relative_link_names_a_file_in_the_repository(doc):
    missing = []
    for link in relative_links(doc.read_text()):
        target = (doc.parent / link.split("#", 1)[0]).resolve()
        if not target.is_relative_to(ROOT) or not target.exists():
            missing.append(link)
    assert not missing, f"{doc.relative_to(ROOT)} links to files not in the repository: {missing}"


def test_the_readme_links_the_background_doc():
    assert "(docs/kvm-background.md)" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_every_source_path_the_docs_name_exists(doc):
    """`concurrent_dirty/....py` in a doc names a real module (they move)."""
    paths = re.findall(r"`((?:concurrent_dirty|tests|tools|examples)/[\w/]+\.py)`",
                       doc.read_text())
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"{doc.relative_to(ROOT)} names files that do not exist: {missing}"
