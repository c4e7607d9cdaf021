"""Fixtures: every store test runs on a real SQLite file, a real PostgreSQL server and a real Citus cluster.

PostgreSQL tests need ``CONVSTORE_TEST_POSTGRES_URL`` (e.g. ``postgresql+psycopg://postgres@127.0.0.1/test``),
Citus tests ``CONVSTORE_TEST_CITUS_URL`` (a coordinator with the ``citus`` extension and its workers; CI
starts one with the workplace's Citus ``up.sh``). Without the variable those tests are skipped with that
reason; with it, a server that cannot be reached fails them (CI sets both, so CI cannot pass without
running them).
Each test gets its own schema, dropped afterwards; on Citus its tables are distributed when the store builds
them.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from flavours import Portal, SyncProxy
from hypothesis import HealthCheck, settings

import convstore
from convstore.testing import Emulator

# pytester runs the pytest plugin (convstore.pytest_plugin) in inner sessions: test_pytest_plugin.py.
pytest_plugins = ["pytester"]

# dev: the default run, quick (a third of the examples a test names, see strategies.examples); ci: what CI
# runs (.ci/run sets HYPOTHESIS_PROFILE=ci); long: for a night.
settings.register_profile(
    "dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.register_profile(
    "long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

T = TypeVar("T")
POSTGRES_ENV = "CONVSTORE_TEST_POSTGRES_URL"
CITUS_ENV = "CONVSTORE_TEST_CITUS_URL"
# Shards per distributed table in the tests' schemas: enough to spread conversations over both workers,
# few enough that building a schema per test stays quick (Citus's default is 32).
CITUS_SHARDS = 4
REPO = Path(__file__).resolve().parents[1]
# The API wire fixtures (tests/fixtures/interactions/README.md says what each stands for). Everything a test
# reads is inside the repository: test_self_contained.py keeps it so.
FIXTURES = REPO / "tests" / "fixtures" / "interactions"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow", action="store_true", help="run the long suites (soak, crash, fuzz) unbounded"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long-running: pass --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def postgres_base_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(
            f"PostgreSQL tests need {POSTGRES_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1/test)"
        )
    return url


def citus_base_url() -> str:
    url = os.environ.get(CITUS_ENV)
    if not url:
        pytest.skip(
            f"Citus tests need {CITUS_ENV}, a Citus coordinator "
            "(e.g. postgresql+psycopg://postgres@127.0.0.1:5440/test from the workplace's Citus up.sh)"
        )
    return url


# A PostgreSQL server shared with other work may run out of connections ("too many clients already",
# "remaining connection slots are reserved"). The tests' own connections wait for one, a few seconds at a
# time, up to OUT_OF_CONNECTIONS_WAIT; a test that still meets the error is skipped, saying so, instead of
# failing on someone else's load.
OUT_OF_CONNECTIONS = ("too many clients already", "remaining connection slots are reserved")
OUT_OF_CONNECTIONS_WAIT = float(os.environ.get("CONVSTORE_TEST_CONNECTION_WAIT", "60"))


def out_of_connections(error: BaseException | None) -> bool:
    """Whether ``error`` (or an error it was raised from) is the server refusing a connection for want of
    free slots."""
    seen = 0
    while error is not None and seen < 20:
        if any(text in str(error) for text in OUT_OF_CONNECTIONS):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


def _waiting_for_connections(action: Callable[[], T]) -> T:
    """``action()``, tried again while the server is out of connections, up to OUT_OF_CONNECTIONS_WAIT."""
    deadline = time.monotonic() + OUT_OF_CONNECTIONS_WAIT
    while True:
        try:
            return action()
        except Exception as exc:
            if not out_of_connections(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1 + random.random())  # spread: the waiting workers do not retry in step


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.failed and call.excinfo is not None and out_of_connections(call.excinfo.value):
        report.outcome = "skipped"
        report.longrepr = (
            str(item.path),
            item.location[1] or 0,
            "Skipped: the PostgreSQL server ran out of connections (too many clients), "
            "shared with other work; run again when it is less busy",
        )
    return report


def _admin_engine(url: str, env: str, what: str) -> Iterator[object]:
    import sqlalchemy as sa  # noqa: PLC0415

    # No pool: the admin makes and drops a schema per test, and holds no connection in between.
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)

    def ping() -> None:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    try:
        _waiting_for_connections(ping)
    except Exception as exc:
        pytest.fail(f"{env} is set but {what} cannot be reached: {type(exc).__name__}: {exc}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def _postgres_admin() -> Iterator[object]:
    yield from _admin_engine(postgres_base_url(), POSTGRES_ENV, "PostgreSQL")


@pytest.fixture(scope="session")
def _citus_admin() -> Iterator[object]:
    import sqlalchemy as sa  # noqa: PLC0415

    for engine in _admin_engine(citus_base_url(), CITUS_ENV, "the Citus coordinator"):
        assert isinstance(engine, sa.Engine)
        with engine.connect() as conn:
            found = conn.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'citus'").first()
        if found is None:
            pytest.fail(f"{CITUS_ENV} names a database without the citus extension")
        yield engine


def _pg_schema_url(admin: object, base: str, options: str = "") -> Iterator[str]:
    import sqlalchemy as sa  # noqa: PLC0415

    assert isinstance(admin, sa.Engine)
    schema = f"t_{uuid.uuid4().hex[:16]}"

    def run(statement: str) -> None:
        with admin.begin() as conn:
            conn.exec_driver_sql(statement)

    _waiting_for_connections(lambda: run(f"CREATE SCHEMA {schema}"))
    url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema}{options}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        _waiting_for_connections(lambda: run(f"DROP SCHEMA {schema} CASCADE"))


def citus_schema_url(admin: object) -> Iterator[str]:
    """A fresh schema on the Citus coordinator, whose sessions make small distributed tables."""
    return _pg_schema_url(admin, citus_base_url(), f" -ccitus.shard_count={CITUS_SHARDS}")


BACKENDS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("citus", marks=pytest.mark.citus),
]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a SQLite file, a fresh PostgreSQL schema, or one on a Citus cluster."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    elif request.param == "postgres":
        admin = request.getfixturevalue("_postgres_admin")
        yield from _pg_schema_url(admin, postgres_base_url())
    else:
        admin = request.getfixturevalue("_citus_admin")
        yield from citus_schema_url(admin)


@pytest.fixture(scope="session")
def portal() -> Iterator[Portal]:
    running = Portal()
    yield running
    running.close()


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    """Which store the ``store`` fixture is: ``convstore.Store`` or ``convstore.AsyncStore``."""
    return str(request.param)


@pytest.fixture
def make_store(db_url: str, flavour: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """``make_store(**options)``: a store of the test's flavour on its database; all closed at the end."""
    import sqlalchemy as sa  # noqa: PLC0415

    closers: list[Any] = []

    def make(**options: Any) -> Any:
        if flavour == "sync":
            opened = convstore.Store(db_url, **options)
            closers.append(opened.close)
            return opened
        portal: Portal = request.getfixturevalue("portal")
        opened_async = convstore.AsyncStore(db_url, **options)
        portal.call(opened_async.__aenter__())
        inspector = sa.create_engine(db_url)  # the tests' own window on the database's rows
        closers.append(lambda: portal.call(opened_async.aclose()))
        closers.append(inspector.dispose)
        return SyncProxy(opened_async, portal, engine=inspector)

    yield make
    for close in closers:
        close()


@pytest.fixture
def store(make_store: Any) -> Any:
    """The store under test: every test that takes it runs on the sync and the async store alike."""
    return make_store()


def user(text: str, *extra: dict[str, Any]) -> dict[str, Any]:
    """A user_input step of ``text``, then the ``extra`` contents (an image, ...)."""
    return {"type": "user_input", "content": [{"type": "text", "text": text}, *extra]}


def steps_of(tag: str) -> list[dict[str, Any]]:
    return [
        user(tag),
        {"type": "thought", "signature": f"sig-{tag}"},
        {"type": "model_output", "content": [{"type": "text", "text": f"re {tag}"}]},
    ]


def model(text: str) -> dict[str, object]:
    return {"type": "model_output", "content": [{"type": "text", "text": text}]}


def completed_reply(text: str = "done", model_name: str = "gemini-3-flash-preview") -> dict[str, object]:
    """The API's JSON of a completed interaction answering ``text`` (id ``v1_reply``)."""
    return {"id": "v1_reply", "status": "completed", "model": model_name, "steps": [model(text)]}


@pytest.fixture
def emulator() -> Emulator:
    return Emulator()


@pytest.fixture
def client(emulator: Emulator, flavour: str, request: pytest.FixtureRequest) -> Iterator[object]:
    """The client of the store's flavour: the async store calls the async client."""
    if flavour == "sync":
        with httpx.Client(transport=emulator.transport()) as http:
            yield convstore.InteractionsClient("test-key", http_client=http, sleep=lambda _: None)
        return
    portal = request.getfixturevalue("portal")

    async def no_wait(_: float) -> None:
        return None

    async_http = httpx.AsyncClient(transport=emulator.transport())
    async_client = convstore.AsyncInteractionsClient("test-key", http_client=async_http, sleep=no_wait)
    yield SyncProxy(async_client, portal)  # type: ignore[misc]
    portal.call(async_http.aclose())


@pytest.fixture(scope="session")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The file names in a wheel of this checkout, built once a session (the wheel tests share it)."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import zipfile  # noqa: PLC0415

    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("wheel")
    build = ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)]
    subprocess.run(
        [sys.executable, "-m", "pip", *build],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("convstore-*.whl")
    return set(zipfile.ZipFile(wheel).namelist())
