"""The README is the front door: short, the two commands exactly as a new user types them, one example
that runs (tests/docs/test_docs.py runs it with every docs page's), and links that lead somewhere in the
repository."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO
from docs_examples import collect

README = (REPO / "README.md").read_text(encoding="utf-8")
RUN = 'python3 -m venv .venv && . .venv/bin/activate && pip install ".[cli]" && convstore demo'
TEST = 'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && pytest'


def test_the_readme_is_short_and_has_the_two_commands():
    assert len(README.encode()) <= 12 * 1024
    commands = [example.code.strip() for example in collect(REPO / "README.md") if example.lang == "bash"]
    assert commands == [RUN, TEST]


def test_the_readme_has_one_example_that_says_what_it_prints():
    (example,) = [example for example in collect(REPO / "README.md") if example.lang == "python"]
    assert example.expected is not None
    assert "convstore.Store(" in example.code
    assert ".fork(" in example.code


def test_every_link_of_the_readme_leads_to_a_file_of_the_repository():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    assert len(links) >= 15
    for link in links:
        assert not link.startswith(("http:", "https:", "/", "..")), link
        assert (REPO / link).is_file(), link


def test_the_readme_names_no_folder_outside_the_repository():
    # A clone has only the repository: the README says how to bring a PostgreSQL server or a Citus
    # cluster in general terms, never a path next to it.
    assert "../" not in README
    assert "/work/" not in README


def test_the_quickstart_the_readme_names_runs(tmp_path):
    # `python examples/quickstart.py`, from a folder of its own (it may leave a database behind).
    script = REPO / "examples" / "quickstart.py"
    assert f"python {script.relative_to(REPO)}" in README
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "<- main" in result.stdout
