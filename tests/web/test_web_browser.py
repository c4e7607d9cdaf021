"""``convstore serve`` in a real browser: Debian's chromium, driven by Selenium through the system
chromedriver (never a downloaded browser or driver).

The server runs in a thread on a loopback socket, as ``convstore serve`` runs it. The tests open the list,
a tree with three branches and an image, expand a thought, compare two branches, fork at a node with writes
allowed, follow a turn recorded meanwhile without a reload, and check that hostile text in every field stays
text: no alert, no element it would inject, no Content-Security-Policy violation. Screenshots of the main
pages go to ``$CONVSTORE_SCREENSHOTS`` (or a folder under pytest's tmp, printed at the end of each test).

Skipped, saying why, when chromium, chromedriver or selenium is missing (``.ci/run`` installs them):
``apt-get install -y chromium chromium-driver``.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import convstore

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(
        "browser tests need Debian's chromium and chromedriver: apt-get install -y chromium chromium-driver",
        allow_module_level=True,
    )
pytest.importorskip("selenium", reason="browser tests need selenium (in the test extra)")
pytest.importorskip("uvicorn", reason="browser tests need the web extra")

import uvicorn  # noqa: E402
from conftest import model, user  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402
from test_web import XSS, build_sample, png_bytes, record  # noqa: E402

from convstore.web import Settings, create_app  # noqa: E402

TOKEN = "browser-token-" + "y" * 20


def build_tour(store: convstore.Store) -> dict[str, Any]:
    """A plain conversation for the screenshots: three branches, an image, a thought, a function call."""
    image = base64.b64encode(png_bytes(48, 32)).decode()
    conv = store.create_conversation(
        model="gemini-3-flash-preview",
        system_instruction="You are a concise travel assistant.",
        tools=[{"type": "function", "name": "get_weather"}],
    )
    record(
        conv,
        user(
            "I am packing for Lisbon. What colour is this suitcase?",
            {"type": "image", "data": image, "mime_type": "image/png"},
        ),
        [
            {
                "type": "thought",
                "signature": base64.b64encode(b"s" * 48).decode(),
                "summary": [
                    {
                        "type": "text",
                        "text": "The image shows a flat orange rectangle: a suitcase, seen from the side.",
                    }
                ],
            },
            model("It is orange, a bright tangerine orange."),
        ],
        1,
    )
    question = conv.nodes()[0]
    record(
        conv,
        user("Will I need an umbrella there tomorrow?"),
        [
            {
                "type": "function_call",
                "id": "call-1",
                "name": "get_weather",
                "arguments": {"city": "Lisbon", "day": "tomorrow"},
            }
        ],
        2,
    )
    conv.append(
        [
            {
                "type": "function_result",
                "call_id": "call-1",
                "name": "get_weather",
                "result": {"rain_mm": 4.2, "sky": "showers"},
            },
            model("Yes: showers are expected, about 4 mm. Pack a small umbrella."),
        ]
    )
    replay = conv.edit(question.id, branch="main@gemini-3-pro-preview")
    record(
        replay,
        user(
            "I am packing for Lisbon. What colour is this suitcase?",
            {"type": "image", "data": image, "mime_type": "image/png"},
        ),
        [model("Orange.")],
        3,
    )
    edited = conv.fork(at=conv.nodes()[2].id, branch="asks-about-porto")
    record(edited, user("And in Porto?"), [model("Porto will be dry and cooler, 14 °C.")], 4)
    return {"conv": conv, "question": question}


def _free_socket() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    return listener


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'browser.db'}"


@pytest.fixture
def server(db: str) -> Iterator[str]:
    """``convstore serve``'s app on a loopback socket in a thread; yields its base URL."""
    convstore.Store(db).close()
    listener = _free_socket()
    port = listener.getsockname()[1]
    settings = Settings(
        db,
        token=TOKEN,
        allow_writes=True,
        hosts=[f"127.0.0.1:{port}"],
        cookie=f"convstore_token_{port}",
        poll_seconds=0.2,
    )
    config = uvicorn.Config(
        create_app(settings), log_level="warning", access_log=False, timeout_graceful_shutdown=1
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not running.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(timeout=20)
    listener.close()


@pytest.fixture
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("CONVSTORE_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser(server: str, tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",  # the machine has no network: no update checks
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,860",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver: webdriver.Chrome, url: str) -> None:
    driver.get(url)
    WebDriverWait(driver, 15).until(lambda d: d.execute_script("return document.readyState") == "complete")


def shoot(driver: webdriver.Chrome, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")


def wait_for(
    driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], Any], seconds: float = 15
) -> Any:
    ignored = (NoSuchElementException, StaleElementReferenceException)  # the page is being replaced
    return WebDriverWait(driver, seconds, poll_frequency=0.1, ignored_exceptions=ignored).until(condition)


def no_alert(driver: webdriver.Chrome) -> None:
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 -- reading it is the check


def csp_violations(driver: webdriver.Chrome) -> list[str]:
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]


def test_browse_compare_and_fork(db, server, browser, screenshots):
    with convstore.Store(db) as store:
        tour = build_tour(store)
    conv = tour["conv"]

    open_page(browser, f"{server}/?token={TOKEN}")
    assert "token=" not in browser.current_url  # the token became a cookie and left the address bar
    listed = browser.find_element(By.ID, "conversations").text
    assert conv.id[-8:] in listed  # the short id, as `convstore show` takes it
    assert "I am packing for Lisbon. What colour is this suitcase?" in listed  # the first message
    shoot(browser, screenshots, "list")

    browser.find_element(By.LINK_TEXT, conv.id[-8:]).click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "tree"))
    labels = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#tree a.branch")]
    assert sorted(labels) == ["● asks-about-porto", "● main", "● main@gemini-3-pro-preview"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#tree .forkmark")) == 1  # and two roots (the replay)
    usage = browser.find_element(By.CSS_SELECTOR, 'tr[data-branch="main"]').text
    assert "300" in usage  # the API's input tokens of main's two recorded exchanges
    graph = browser.find_element(By.CSS_SELECTOR, "svg.graph")  # the tree as a picture, drawn by the server
    assert graph.size["height"] > 50
    heads = browser.find_elements(By.CSS_SELECTOR, "svg.graph .headname")
    assert sorted(h.text for h in heads) == ["● asks-about-porto", "● main", "● main@gemini-3-pro-preview"]
    shoot(browser, screenshots, "tree")

    browser.find_element(By.CSS_SELECTOR, 'tr[data-branch="main"] a').click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "steps"))
    image = browser.find_element(By.CSS_SELECTOR, "figure.media img")
    wait_for(
        browser,
        lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image),
    )
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 48  # decoded from the store
    thought = browser.find_element(By.CSS_SELECTOR, "details.thought")
    assert thought.get_attribute("open") is None
    assert not browser.find_element(By.CSS_SELECTOR, "details.thought .text").is_displayed()
    thought.find_element(By.TAG_NAME, "summary").click()
    assert thought.get_attribute("open") is not None
    assert "flat orange rectangle" in thought.find_element(By.CSS_SELECTOR, ".text").text
    arguments = browser.find_element(By.CSS_SELECTOR, "pre.arguments").text
    assert '"city": "Lisbon"' in arguments
    shoot(browser, screenshots, "branch")

    open_page(browser, f"{server}/c/{conv.id}")
    Select(browser.find_element(By.NAME, "a")).select_by_visible_text("main")
    Select(browser.find_element(By.NAME, "b")).select_by_visible_text("main@gemini-3-pro-preview")
    browser.find_element(By.CSS_SELECTOR, "form.compare button").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "comparison"))
    summary = browser.find_element(By.ID, "summary").text
    assert "First difference: exchange 1 of" in summary
    marked = browser.find_elements(By.CSS_SELECTOR, "li.step.differs")
    assert any("Orange." in step.text for step in marked)
    assert any("bright tangerine" in step.text for step in marked)
    shoot(browser, screenshots, "compare")

    open_page(browser, f"{server}/c/{conv.id}/branch?b=main")
    step = browser.find_element(By.ID, f"n-{tour['question'].id}")
    step.find_element(By.NAME, "name").send_keys("from-the-browser")
    step.find_element(By.CSS_SELECTOR, "form.fork button").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "branch-name").text == "from-the-browser")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#steps > li.step")) == 1
    with convstore.Store(db) as store:
        assert store.conversation(conv.id, "from-the-browser").head_id == tour["question"].id
    assert csp_violations(browser) == []
    no_alert(browser)


def test_hostile_content_stays_text(db, server, browser, screenshots):
    with convstore.Store(db) as store:
        built = build_sample(store)
    conv = built["conv"]
    open_page(browser, f"{server}/?token={TOKEN}")
    pages = [
        f"{server}/",
        f"{server}/c/{conv.id}",
        f"{server}/c/{conv.id}/branch?b=main",
        f"{server}/c/{conv.id}/compare?a=main&b=alt",
    ]
    pages.append(pages[1])  # then into the hostile branch by its link
    for number, url in enumerate(pages):
        open_page(browser, url)
        if number == len(pages) - 1:
            link = next(
                a for a in browser.find_elements(By.CSS_SELECTOR, "#tree a.branch") if "onmouseover" in a.text
            )
            link.click()
            wait_for(browser, lambda d: d.find_elements(By.ID, "steps"))
            assert 'onmouseover="alert(1)"' in browser.find_element(By.ID, "branch-name").text
        no_alert(browser)
        for element in browser.find_elements(By.CSS_SELECTOR, ".text, .branchname, a.branch, pre"):
            browser.execute_script(  # hover everything that shows stored text, for the onmouseover payloads
                "arguments[0].dispatchEvent(new MouseEvent('mouseover', {bubbles: true}))", element
            )
        no_alert(browser)
        assert browser.execute_script("return window.__xss") is None
        hostile = "script:not([src]), svg:not(.graph), b, img[onerror], [onload], [onmouseover]"
        injected = browser.execute_script(f"return document.querySelectorAll('{hostile}').length")
        assert injected == 0, url
        scripts = browser.execute_script(
            "return Array.from(document.scripts).map(s => s.getAttribute('src'))"
        )
        assert scripts == ["/static/app.js"]
        links = browser.execute_script("return Array.from(document.links).map(a => a.getAttribute('href'))")
        assert all(not href.lower().startswith("javascript:") for href in links)
    open_page(browser, f"{server}/c/{conv.id}/branch?b=main")
    text = browser.find_element(By.ID, "steps").text
    for payload in XSS:
        assert payload.strip() in text  # shown as the text it is
    shoot(browser, screenshots, "hostile")
    assert csp_violations(browser) == []


def test_a_recorded_turn_appears_without_a_reload(db, server, browser, screenshots):
    with convstore.Store(db) as store:
        conv = build_tour(store)["conv"]
    open_page(browser, f"{server}/c/{conv.id}/branch?b=main&token={TOKEN}")
    wait_for(browser, lambda d: d.find_element(By.ID, "live-status").text == "live")
    browser.execute_script("window.__stayed = 'same page'")
    before = len(browser.find_elements(By.CSS_SELECTOR, "#steps > li.step"))
    with convstore.Store(db) as store:
        writer = store.conversation(conv.id)
        record(
            writer,
            user("One more thing: is the museum open on Monday?"),
            [model("The Gulbenkian is closed on Tuesdays, open on Monday.")],
            5,
        )
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#steps > li.step")) == before + 2)
    assert "closed on Tuesdays" in browser.find_element(By.ID, "steps").text
    assert browser.execute_script("return window.__stayed") == "same page"  # updated in place
    shoot(browser, screenshots, "streamed")

    open_page(browser, f"{server}/c/{conv.id}")
    wait_for(browser, lambda d: d.find_element(By.ID, "live-status").text == "live")
    browser.execute_script("window.__stayed = 'same tree'")
    with convstore.Store(db) as store:
        store.conversation(conv.id).fork(branch="forked-meanwhile")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-branch="forked-meanwhile"]'))
    assert browser.execute_script("return window.__stayed") == "same tree"
    assert csp_violations(browser) == []


def test_a_tree_of_many_branches_is_a_narrow_picture(db, server, browser, screenshots):
    """Replays fanned out from one answer (300 here; the layout test covers 1,000): one lane for them all."""
    with convstore.Store(db) as store:
        conv = store.create_conversation(model="gemini-3-flash-preview")
        conv.append([user("Write a haiku about the sea."), model("Waves fold into foam")])
        for k in range(3):
            conv.append([user(f"Another one, number {k}"), model(f"haiku {k}")])
        fork_at = conv.nodes()[1].id
        for n in range(300):
            branch = conv.fork(at=fork_at, branch=f"replay-{n:03d}")
            branch.append([user(f"Variant {n}: shorter, please"), model(f"answer {n}")])
    open_page(browser, f"{server}/c/{conv.id}?token={TOKEN}")
    graph = browser.find_element(By.CSS_SELECTOR, "svg.graph")
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.graph a")) == 302  # chains folded: a node each
    assert int(graph.get_attribute("width")) < 1400  # two lanes and the labels, not 300 lanes
    assert csp_violations(browser) == []
    shoot(browser, screenshots, "many-branches")
