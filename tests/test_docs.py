"""The documentation site: it builds in strict mode, and every page is reachable."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUN_CONTEXT = "agentflow._engine.context.RunContext"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the site once for this module, as CI would: strict, into a fresh directory."""
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"
    return out


def nav_files(entries: object) -> list[str]:
    """Every Markdown file named in a mkdocs ``nav`` (nested sections included)."""
    if isinstance(entries, str):
        return [entries] if entries.endswith(".md") else []
    if isinstance(entries, list):
        return [name for entry in entries for name in nav_files(entry)]
    if isinstance(entries, dict):
        return [name for value in entries.values() for name in nav_files(value)]
    return []


def text_of(page: Path) -> str:
    """A built page's visible text, roughly: tags stripped."""
    return re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8"))


def test_the_site_builds_strict_with_every_page(site: Path) -> None:
    for page in ("index.html", "adding-to-your-site/index.html", "guarantees/index.html"):
        assert (site / page).is_file(), f"{page} was not built"
    assert (site / "reference" / "index.html").is_file()
    assert "agentflow.E004" in text_of(site / "adding-to-your-site" / "index.html")


def test_the_api_page_documents_the_public_names(site: Path) -> None:
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    # mkdocstrings gives each documented object an anchor named by its path.
    for anchor in (
        "agentflow.tool",
        "agentflow.agent",
        "agentflow._engine.context.RunContext",
        "agentflow._engine.context.RunContext.call",
        "agentflow._api.start",
        "agentflow.ToolError",
    ):
        assert f'id="{anchor}"' in html, f"the API page has no entry for {anchor}"
    text = text_of(site / "api" / "index.html")
    assert "RunContext" in text
    assert "Call a tool durably" in text  # a docstring, rendered


def test_the_api_page_opens_with_what_a_user_writes_first(site: Path) -> None:
    """agent, tool and start come first, then wait, get_run and approve, and only after
    them the run context's members and the rest; every public name is documented."""
    import agentflow

    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    documented = re.findall(r'id="(agentflow[\w.]*)"', html)
    first = ["agentflow.agent", "agentflow.tool", "agentflow._api.start"]
    assert documented[:3] == first, documented[:5]
    then = [f"agentflow._api.{name}" for name in ("wait", "get_run", "approve")]
    assert [documented.index(name) for name in then] == [3, 4, 5], documented[:8]
    run_context = documented.index(RUN_CONTEXT)
    assert run_context > max(documented.index(name) for name in first + then)
    assert run_context < documented.index("agentflow.AgentflowError")
    names = {anchor.rsplit(".", 1)[-1] for anchor in documented}
    assert set(agentflow.__all__) <= names, set(agentflow.__all__) - names


def test_the_docs_say_how_to_build_and_serve_them_apart_from_the_demo() -> None:
    """`mkdocs serve` serves (on 8000 by default, the demo's port); `build` builds."""
    for page in (ROOT / "README.md", DOCS / "index.md"):
        text = page.read_text(encoding="utf-8")
        assert "mkdocs build" in text, page
        assert "build with `.venv/bin/mkdocs serve`" not in text, page
        for serve in re.findall(r"mkdocs serve[^\n]*", text):
            assert "-a 127.0.0.1:8001" in serve or "--dev-addr" in serve, (page, serve)


def test_every_page_in_docs_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["docs_dir"] == "docs"
    listed = nav_files(config["nav"])
    pages = sorted(str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md"))
    assert sorted(set(listed)) == pages, "pages missing from the nav, or nav entries with no page"
    assert len(listed) == len(set(listed)), "a page is listed twice in the nav"


def test_every_test_the_docs_cite_exists() -> None:
    """The guarantees are only as good as the tests named for them: a rename must show."""
    cited = {
        (file, name)
        for page in DOCS.rglob("*.md")
        for file, name in re.findall(r"(tests/\w+\.py)::(\w+)", page.read_text(encoding="utf-8"))
    }
    assert len(cited) > 20, "the guarantees page names the tests that prove each guarantee"
    missing = [
        f"{file}::{name}"
        for file, name in sorted(cited)
        if not re.search(rf"^def {name}\(", (ROOT / file).read_text(encoding="utf-8"), re.M)
    ]
    assert not missing, f"docs cite tests that do not exist: {missing}"


def test_the_exit_code_tables_list_start_wait_s_codes() -> None:
    """README's and the docs' tables give every code of _exit_codes.py, and the paragraph
    after the README's is not swallowed into the table (a blank line ends it)."""
    from agentflow.management._exit_codes import ExitCode

    for page in (ROOT / "README.md", DOCS / "reference.md"):
        lines = page.read_text(encoding="utf-8").splitlines()
        top = lines.index("| code | the run |")
        rows = list(itertools.takewhile(lambda line: line.startswith("|"), lines[top + 2 :]))
        codes = {int(row.split("|")[1]) for row in rows}
        assert codes == {int(code) for code in ExitCode}, (page, codes)
        assert lines[top + 2 + len(rows)] == "", (page, lines[top + 2 + len(rows)])
