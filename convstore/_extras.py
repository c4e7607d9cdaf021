"""Optional extras: which ``pip install "convstore[...]"`` brings each optional module.

convstore's core needs only SQLAlchemy, Alembic, attrs, cattrs and httpx. Everything else is an extra,
imported where it is used; when one is missing, the error says what needed it and the one command that
installs it, whichever part of convstore asked (``AsyncStore``, a PostgreSQL URL, a ``Keyring``,
``SentencePieceCounter``, the command line). Nothing here imports the optional modules at load time.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "missing_extra", "require"]

# The top-level module -> (the extra that installs it, what in convstore needs it).
EXTRAS: dict[str, tuple[str, str]] = {
    "greenlet": ("async", "AsyncStore (SQLAlchemy's asyncio layer)"),
    "aiosqlite": ("async", "AsyncStore on SQLite"),
    "psycopg": ("postgres", "a PostgreSQL database"),
    "psycopg_binary": ("postgres", "a PostgreSQL database"),
    "cryptography": ("crypto", "encryption at rest (Keyring)"),
    "rich": ("cli", "colour, tables and progress bars in the command line"),
    "sentencepiece": ("sentencepiece", "SentencePieceCounter"),
    "starlette": ("web", "convstore serve (the web page)"),
    "jinja2": ("web", "convstore serve (the web page)"),
    "uvicorn": ("web", "convstore serve (the web page)"),
    "google": ("genai", "GenAIClient (the google-genai SDK sending the requests)"),
    "opentelemetry": ("otel", "OpenTelemetry spans"),
}

# Drivers convstore does not use, which SQLAlchemy picks for a URL that names none: say which URL works.
_OTHER_DRIVERS = {
    "psycopg2": "postgres",
    "asyncpg": "postgres",
}


class MissingExtraError(ModuleNotFoundError):
    """An optional module is not installed; the message names the ``pip install`` that brings it.

    Attributes:
        name: The missing module (as ``ModuleNotFoundError.name``).
        extra: The convstore extra that installs it.
    """

    def __init__(self, message: str, *, name: str, extra: str) -> None:
        super().__init__(message, name=name)
        self.extra = extra


def missing_extra(error: ImportError, *, needed_by: str | None = None) -> MissingExtraError | None:
    """The ``MissingExtraError`` for ``error`` when the module it misses belongs to an extra, else None.

    Args:
        error: The ``ImportError`` raised by an import (``error.name`` is the module, possibly dotted).
        needed_by: What asked for it, when more precise than the table's description.
    """
    if isinstance(error, MissingExtraError):
        return error
    top = (error.name or "").split(".")[0]
    if top in EXTRAS:
        extra, what = EXTRAS[top]
        return MissingExtraError(
            f'{needed_by or what} needs {top}, which is not installed: pip install "convstore[{extra}]"',
            name=top,
            extra=extra,
        )
    if top in _OTHER_DRIVERS:
        extra = _OTHER_DRIVERS[top]
        return MissingExtraError(
            f"this database URL asks for the {top} driver, which convstore does not use: name psycopg 3 "
            f'in the URL (postgresql+psycopg://...) and pip install "convstore[{extra}]"',
            name=top,
            extra=extra,
        )
    return None


def require(module: str, *, needed_by: str | None = None) -> ModuleType:
    """Import ``module`` (of an extra in ``EXTRAS``), or raise the ``MissingExtraError`` that says how.

    Raises:
        MissingExtraError: the module, or one it needs, is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        found = missing_extra(error, needed_by=needed_by)
        if found is None:  # something else is wrong with an installed module: its own error says what
            raise
        raise found from error
