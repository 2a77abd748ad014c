"""The dashboard in a real browser (Playwright driving Debian's Chromium) on what the demo left behind, served
by ``modelcycle serve`` at ``/ui``: every page loads with no console error and no failed request; the drift
chart of the demo's shifted traffic puts the shifted features first, in red; a promotion made in the page
is refused without the admin token and, with it, moves the alias and shows on the timeline. A screenshot of
each page is saved (``$MODELCYCLE_SCREENSHOTS``, else the test's temporary folder)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelcycle.config import PipelineConfig
from modelcycle.demo import CONFIG, SHIFTED
from modelcycle.monitor.database import open_database
from modelcycle.registry import Registry
from modelcycle.serve import create_app
from modelcycle.serve.background import background_server
from tests.conftest import DemoRun, train_into

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MODEL = "breast-cancer-mlp"
TOKEN = "dashboard-test-token"
RED = "#b00020"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium (Debian: chromium) missing"),
]


class Watched:
    """A browser page whose console errors, uncaught exceptions and failed requests are collected."""

    def __init__(self, page: Any, shots: Path) -> None:
        self.page, self.shots, self.problems = page, shots, []
        page.on("console", lambda message: message.type == "error" and self.problems.append(message.text))
        page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))
        page.on("requestfailed", lambda request: self.problems.append(f"failed: {request.url}"))
        page.on(
            "response",
            lambda response: (
                response.status >= 400 and self.problems.append(f"{response.status} {response.url}")
            ),
        )

    def visit(self, url: str, name: str, *, ready: str = "main") -> None:
        self.page.goto(url, wait_until="networkidle")
        self.page.wait_for_selector(ready, timeout=60_000)
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)
        assert (self.shots / f"{name}.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def served(demo_run: DemoRun) -> Iterator[tuple[str, Registry]]:
    """The demo's registry and store behind a server with the admin token, the dashboard at /ui; one more
    model trained beside it, so that there are two runs to compare."""
    train_into(demo_run.home, ("breast-cancer-mlp.yaml", ["name=breast-cancer-wide", "train.epochs=3"]))
    monitor = PipelineConfig.model_validate(CONFIG).monitor.model_copy(update={"interval_s": 3600.0})
    registry = Registry(demo_run.home)
    app = create_app(registry, [MODEL], admin_token=TOKEN, monitoring=monitor)
    with background_server(app) as url:
        yield url, registry
    registry.close()


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Watched]:
    shots = Path(os.environ.get("MODELCYCLE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            yield Watched(browser.new_page(viewport={"width": 1400, "height": 900}), shots)
        finally:
            browser.close()


def test_every_page_loads_without_a_console_error_or_a_failed_request(
    served: tuple[str, Registry], browser_page: Watched
) -> None:
    url, registry = served
    runs, _ = registry.runs.search()
    assert len(runs) == 2
    pages = {
        "models": (f"{url}/ui/", "main table"),
        "model": (f"{url}/ui/models/{MODEL}", "#chart-metrics .main-svg"),
        "version": (f"{url}/ui/models/{MODEL}/versions/2", "#chart-importance .main-svg"),
        "monitor": (f"{url}/ui/models/{MODEL}/monitor", "#chart-drift .main-svg"),
        "runs": (f"{url}/ui/runs", "#compare-form"),
        "run": (f"{url}/ui/runs/{runs[0].id}", ".chart .main-svg"),
        "compare": (f"{url}/ui/runs/compare?run={runs[0].id}&run={runs[1].id}", ".chart .main-svg"),
        "timeline": (f"{url}/ui/timeline", "#timeline table"),
    }
    for name, (address, ready) in pages.items():
        browser_page.visit(address, name, ready=ready)
    assert browser_page.problems == []


def test_the_drift_chart_of_the_shifted_traffic_shows_the_shifted_features_first_and_red(
    served: tuple[str, Registry], browser_page: Watched
) -> None:
    url, _ = served
    browser_page.visit(f"{url}/ui/models/{MODEL}/monitor", "monitor-drift", ready="#chart-drift .main-svg")
    panels = browser_page.page.evaluate(
        "() => document.getElementById('chart-drift').data.map(t => ({y: t.y, colours: t.marker.color}))"
    )
    drifted = []
    for panel in panels:
        reds = [colour == RED for colour in panel["colours"]]
        assert reds == sorted(reds, reverse=True), "a drifted feature below one that did not drift"
        drifted += [label.rsplit(" (", 1)[0] for label, red in zip(panel["y"], reds, strict=True) if red]
    assert len(drifted) >= 5
    assert set(drifted) <= {*SHIFTED, "prediction"}
    marked = browser_page.page.locator(".drifted-list .drifted").all_inner_texts()
    assert set(marked) == set(drifted)
    assert browser_page.problems == []


def test_a_promotion_in_the_page_needs_the_token_then_moves_the_alias_and_shows_on_the_timeline(
    served: tuple[str, Registry], browser_page: Watched
) -> None:
    url, registry = served
    production = registry.resolve(f"{MODEL}@production").version
    other = 1 if production != 1 else 2
    page = browser_page.page
    browser_page.visit(f"{url}/ui/models/{MODEL}", "model-actions", ready="#actions button")
    page.select_option("#action-version", str(other))
    page.click("button[data-action=promote]")
    page.wait_for_selector("#action-result.refused")
    assert "refused (401)" in page.inner_text("#action-result")
    assert registry.resolve(f"{MODEL}@production").version == production
    browser_page.problems.clear()  # the 401 just checked is the one expected

    page.fill("#admin-token", TOKEN)
    page.dispatch_event("#admin-token", "change")
    page.click("button[data-action=promote]")
    page.wait_for_selector("#action-result.done", timeout=60_000)
    assert registry.resolve(f"{MODEL}@production").version == other
    assert page.locator('a.alias[data-alias="production"]').inner_text() == f"production → v{other}"

    browser_page.visit(f"{url}/ui/timeline?model={MODEL}", "timeline-promoted", ready="#timeline table")
    newest = page.locator("#timeline tbody tr").first
    assert newest.get_attribute("class") == "event-promoted"
    assert f"v{other}" in newest.inner_text()
    assert f"from_version={production}" in newest.inner_text()
    assert browser_page.problems == []


def test_a_page_left_open_draws_the_traffic_that_arrives_after_it_loaded(
    served: tuple[str, Registry], browser_page: Watched, demo_run: DemoRun
) -> None:
    url, _ = served
    quiet = "breast-cancer-wide"  # trained beside the demo, never served
    browser_page.visit(f"{url}/ui/models/{quiet}/monitor", "monitor-empty", ready="#chart-traffic .pending")
    assert "No predictions in this window." in browser_page.page.inner_text("#summary")
    now = time.time()
    with open_database(demo_run.home / "monitor.db") as database:
        database.append(
            (f"late-{index}", 0, quiet, 1, "v2", now - index, 1.0 + index, None, "benign", 0.9, None)
            for index in range(50)
        )
    browser_page.page.wait_for_selector("#chart-traffic .main-svg", timeout=30_000)  # the next refresh
    assert "50 predictions in the last 1h" in browser_page.page.inner_text("#summary")
    assert browser_page.page.locator("#chart-traffic .pending").count() == 0
    browser_page.page.screenshot(path=str(browser_page.shots / "monitor-refreshed.png"), full_page=True)
    assert browser_page.problems == []
