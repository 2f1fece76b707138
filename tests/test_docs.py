"""The documentation site (docs/, built by `make docs` with warnings as errors) shows only code
that runs: every Python block is a file of examples/ (run by tests/test_examples.py), every
`metarec` command line parses, and the API reference lists every `mr.` name."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import metarec as mr
from metarec.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").rglob("*.md"))
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
_SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.M)


def _blocks(lang: str) -> list[tuple[Path, str]]:
    return [
        (p, m.group(2)) for p in DOCS for m in _FENCE.finditer(p.read_text()) if m.group(1) == lang
    ]


def test_the_site_has_its_pages():
    names = {p.relative_to(ROOT / "docs").as_posix() for p in DOCS}
    assert {"getting-started.md", "concepts.md", "method-guide.md", "reference/index.md"} <= names
    assert {f"howto/{h}.md" for h in ("your-data", "features", "cross-domain", "serving", "federated",
                                       "benchmarking", "tuning", "learn2learn")} <= names  # fmt: skip


def test_python_blocks_are_example_files_that_the_tests_run():
    blocks = _blocks("python")
    assert len(blocks) >= 10
    for page, code in blocks:
        included = _SNIPPET.findall(code)
        assert included and code.strip() == f'--8<-- "{included[0]}"', (
            f"{page.name}: a Python block must be one included examples/ file, so that a test runs it"
        )
        assert included[0].startswith("examples/") and (ROOT / included[0]).is_file(), included[0]


def _command_lines() -> list[tuple[Path, str]]:
    out = []
    for page, code in _blocks("bash"):
        for line in code.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("metarec "):
                out.append((page, line))
    return out


def test_every_metarec_command_line_parses():
    lines = _command_lines()
    assert len(lines) >= 12
    parser = build_parser()
    for page, line in lines:
        try:
            parser.parse_args(shlex.split(line)[1:])
        except SystemExit:
            pytest.fail(f"{page.relative_to(ROOT)}: {line!r} does not parse")


def test_the_reference_lists_every_short_import_name():
    text = (ROOT / "docs" / "reference" / "index.md").read_text()
    missing = [n for n in mr.__all__ if f"[`mr.{n}`]" not in text]
    assert missing == []


def test_the_method_guide_links_every_row_to_a_result():
    text = (ROOT / "docs" / "method-guide.md").read_text()
    table = text.split("## Decision table", 1)[1].split("\n\n", 2)[1]
    rows = [
        r
        for r in table.splitlines()
        if r.startswith("|") and not r.startswith(("| feedback", "|---"))
    ]
    assert len(rows) >= 10
    for row in rows:
        last = row.rstrip(" |").rsplit("|", 1)[1]
        assert "results.md#" in last or "placeholder" in last.lower(), row


def test_toml_blocks_are_valid_scenarios():
    import tomllib

    from metarec.config import load_scenario

    blocks = _blocks("toml")
    assert len(blocks) >= 3
    for page, code in blocks:
        included = _SNIPPET.findall(code)
        text = (ROOT / included[0]).read_text() if included else code
        try:
            load_scenario(tomllib.loads(text), data_root="/datasets")  # every key and value checked
        except Exception as e:
            pytest.fail(f"{page.relative_to(ROOT)}: a TOML block is not a valid scenario: {e}")
