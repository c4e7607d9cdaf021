"""The test suite reads nothing outside the repository, so a clone of the repository alone runs it.

Scans the source of every file under ``tests/`` for the ways a path has escaped before: a ``.parent`` taken
of the repository root, ``parents[k]`` climbing above it, a string that names ``shared`` or ``..`` as a
path segment, or an absolute path into the machine's work folders. Strings that are not paths a test reads
(a hostile command-line argument, a script named in a message for the developer) are listed below with
their reason.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

from conftest import REPO

TESTS = REPO / "tests"

# (file relative to tests/, text in the string literal): why it is not a path the tests read.
ALLOWED = {
    ("reliability/test_hostile.py", '"../../etc/passwd"'): "a hostile argument the CLI must refuse",
    ("docs/test_readme.py", '"../"'): "what the README must not name",
    ("docs/test_readme.py", '"/work/"'): "what the README must not name",
    ("docs/test_readme.py", '".."'): "a README link must not climb out of the repository",
}


def _allowed(relative: str, literal: str) -> bool:
    return any(relative == name and text in literal for name, text in ALLOWED)


_ROOT_NAMES = r"(?:REPO|REPO_ROOT|ROOT)"
_ESCAPES = [
    (re.compile(rf"\b{_ROOT_NAMES}\s*\.\s*parent\b"), "takes the parent of the repository root"),
    (re.compile(r"(^|[/\\])shared([/\\]|$)"), "names a `shared` folder"),
    (re.compile(r"(^|[/\\])\.\.([/\\]|$)"), "climbs with `..`"),
    (re.compile(r"^/(work|home|srv|opt)/"), "is an absolute path outside the repository"),
]
_PARENTS = re.compile(r"Path\(__file__\)(?:\.resolve\(\))?\.parents\[(\d+)\]")


def _sources() -> list[Path]:
    """Every Python file under tests/ but this one, whose samples of escapes are strings, never read."""
    return sorted(path for path in TESTS.rglob("*.py") if path != Path(__file__).resolve())


def escapes(path: Path, text: str | None = None) -> list[str]:
    """What in ``path``'s source (or ``text``) reaches outside the repository, as ``file:line: why``."""
    text = path.read_text(encoding="utf-8") if text is None else text
    relative = path.relative_to(TESTS).as_posix()
    found = []
    top = len(path.relative_to(REPO).parts) - 1  # Path(__file__).parents[top] is the repository root
    for match in _PARENTS.finditer(text):
        if int(match.group(1)) > top:
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{relative}:{line}: parents[{match.group(1)}] climbs above the repository")
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.NAME and token.string in {"REPO", "REPO_ROOT", "ROOT"}:
            rest = text.splitlines()[token.start[0] - 1][token.start[1] :]
            if re.match(_ESCAPES[0][0], rest):
                found.append(f"{relative}:{token.start[0]}: {_ESCAPES[0][1]}")
        if token.type != tokenize.STRING or _allowed(relative, token.string):
            continue
        value = token.string.strip("rbuRBUfF").strip("'\"")
        for pattern, reason in _ESCAPES[1:]:
            if pattern.search(value):
                found.append(f"{relative}:{token.start[0]}: {token.string[:60]} {reason}")
                break
    return found


def test_no_test_reads_outside_the_repository():
    assert TESTS.is_dir()
    problems = [problem for path in _sources() for problem in escapes(path)]
    assert problems == []


def test_the_scan_catches_the_old_escapes():
    # The fixture path as it was before the fixtures moved into tests/, and more of the kind.
    found = escapes(TESTS / "client" / "_escape_sample.py", _SAMPLE)
    assert sorted(int(item.split(":")[1]) for item in found) == [2, 2, 3, 4, 5], found
    assert all(item.startswith("client/_escape_sample.py:") for item in found)


_SAMPLE = """\
REPO_ROOT = Path(__file__).resolve().parents[2]  # the repository root: fine
FIXTURES = REPO_ROOT.parent / "shared" / "fixtures" / "interactions"
OTHER = Path(__file__).resolve().parents[3] / "x"
DATA = "/work/shared/fixtures"
UP = Path("../fixtures")
"""
