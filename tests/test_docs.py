"""Every document the repository cites exists in it, down to the heading.

The code, tests, configs, scripts and README may point a reader at ``docs/<page>.md`` or
``docs/<page>.md#<heading>``; the page and the heading must exist. Links between the pages of ``docs/``
must resolve the same way. Nothing may cite a document that is not in the repository: a Markdown file
that does not exist, numbered section signs of such documents, or folders outside the repository.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
SCANNED = ("README.md", "pyproject.toml", ".ci", "wavecl", "tests", "benchmarks", "scripts", "docs")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".txt", ".cfg", ".ini", ""}

SECTION_SIGN = "\N{SECTION SIGN}"
FORBIDDEN: dict[str, re.Pattern[str]] = {
    "a numbered section of a document outside the repository": re.compile(SECTION_SIGN),
    "a folder outside the repository": re.compile(r"\.\./shared|shared/(spec|seeds)"),
    "the decisions table of a document outside the repository": re.compile(r"decisions table", re.IGNORECASE),
    "a README outside the repository": re.compile(r"seed\s+README"),
    "a specification outside the repository": re.compile(r"\bthe spec\b", re.IGNORECASE),
}
MARKDOWN_PATH = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.md)(?:#([\w-]+))?")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def scanned_files() -> Iterator[Path]:
    """The text files of the repository that a reader may follow a citation from (but this one, whose
    examples of bad citations are there on purpose)."""
    for name in SCANNED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        for candidate in candidates:
            if (
                candidate.is_file()
                and candidate != Path(__file__)
                and "__pycache__" not in candidate.parts
                and candidate.suffix in TEXT_SUFFIXES
            ):
                yield candidate


def numbered_lines(path: Path) -> list[tuple[int, str]]:
    return list(enumerate(path.read_text(encoding="utf-8").splitlines(), start=1))


def prose_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Lines of a Markdown file outside fenced code blocks, with inline code spans removed."""
    in_fence = False
    for number, line in numbered_lines(path):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            yield number, re.sub(r"`[^`]*`", "", line)


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Anchors of every heading of ``page`` (a repeated heading gets ``-1``, ``-2``, ... as on GitHub)."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(page):
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def check_target(page: Path, anchor: str | None, root: Path) -> str | None:
    """Why ``page#anchor`` does not resolve inside the repository at ``root``, or None when it does."""
    if not page.resolve().is_relative_to(root.resolve()):
        return f"{page} is outside the repository"
    name = page.resolve().relative_to(root.resolve())
    if not page.is_file():
        return f"{name} does not exist"
    if anchor is not None and anchor not in anchors(page):
        return f"{name} has no heading with the anchor #{anchor}"
    return None


def citation_problems(path: Path, root: Path = ROOT) -> list[str]:
    """Every citation of ``path`` that does not point at an existing page and heading of the repository
    at ``root``. In Markdown files paths are relative to the file's folder (and links are checked too),
    elsewhere to ``root``."""
    where = path.relative_to(root)
    markdown = path.suffix == ".md"
    base = path.parent if markdown else root
    problems = []
    for number, line in numbered_lines(path):
        for reason, pattern in FORBIDDEN.items():
            if pattern.search(line):
                problems.append(f"{where}:{number}: cites {reason}: {line.strip()}")
        for match in MARKDOWN_PATH.finditer(MARKDOWN_LINK.sub("]", line) if markdown else line):
            problem = check_target(base / match.group(1), match.group(2), root)
            if problem is not None:
                problems.append(f"{where}:{number}: {problem}: {line.strip()}")
    if markdown:
        for number, line in prose_lines(path):
            for match in MARKDOWN_LINK.finditer(line):
                target = match.group(1)
                if re.match(r"[a-z]+:", target):
                    continue  # a web address
                file_part, _, anchor = target.partition("#")
                page = (path.parent / file_part) if file_part else path
                if page.suffix != ".md":
                    if not page.exists():
                        problems.append(f"{where}:{number}: the link target {target} does not exist")
                    continue
                problem = check_target(page, anchor or None, root)
                if problem is not None:
                    problems.append(f"{where}:{number}: {problem}")
    return problems


def test_every_citation_resolves_inside_the_repository() -> None:
    missing = [name for name in SCANNED if not (ROOT / name).exists()]
    assert not missing, f"the scanned paths {missing} do not exist: update SCANNED"
    files = list(scanned_files())
    assert any(path.suffix == ".py" for path in files) and (DOCS / "README.md") in files
    problems = [problem for path in files for problem in citation_problems(path)]
    assert not problems, "citations that do not resolve inside the repository:\n" + "\n".join(problems)


def test_the_docs_index_lists_every_page() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    pages = sorted(page.name for page in DOCS.glob("*.md") if page.name != "README.md")
    assert pages, "docs/ holds no page"
    missing = [page for page in pages if f"]({page})" not in index]
    assert not missing, f"docs/README.md does not link {missing}"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("example.md", "see docs/architecture.md#wip for the gate", []),
        ("example.md", "see docs/architecture.md#no-such-heading", ["no heading with the anchor #no-such-heading"]),
        ("example.md", "see docs/missing-page.md", ["docs/missing-page.md does not exist"]),
        ("example.md", "as in training.md for the schedule", ["training.md does not exist"]),
        ("example.md", "see ../shared/spec/x.md", ["a folder outside the repository", "is outside the repository"]),
        ("example.md", "computed from the spec", ["a specification outside the repository"]),
        ("example.md", f"steps 1-8 of {SECTION_SIGN}3.5", ["a numbered section"]),
        ("example.md", "(decisions table)", ["the decisions table"]),
        ("example.md", "hyper-parameters of the seed README", ["a README outside the repository"]),
        ("example.md", "[the metrics](docs/datasets.md#metrics)", []),
        ("example.md", "[a comment](docs/datasets.md#not-a-heading)", ["no heading with the anchor #not-a-heading"]),
        ("example.md", "[a module](wavecl/missing.py)", ["the link target wavecl/missing.py does not exist"]),
        ("docs/page.md", "[the metrics](datasets.md#metrics), then architecture.md", []),
        ("pkg/module.py", '"""The gate (docs/architecture.md#wip)."""', []),
        ("pkg/module.py", '"""The gate (architecture.md §3.5)."""', ["a numbered section", "architecture.md does not"]),
    ],
)
def test_the_checker_tells_good_citations_from_bad(tmp_path: Path, name: str, text: str, expected: list[str]) -> None:
    """The checker itself, on a one-line file in a scratch repository with two small pages."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "architecture.md").write_text("# Architecture\n\n## WIP\n", encoding="utf-8")
    (tmp_path / "docs" / "datasets.md").write_text("# Datasets\n\n```text\n# not a heading\n```\n\n## Metrics\n")
    cited = tmp_path / name
    cited.parent.mkdir(exist_ok=True)
    cited.write_text(text + "\n", encoding="utf-8")
    problems = citation_problems(cited, tmp_path)
    assert len(problems) == len(expected), problems
    for problem, fragment in zip(problems, expected):
        assert fragment in problem
