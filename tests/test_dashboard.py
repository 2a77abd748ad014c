"""The dashboard's pages over a real registry and prediction store: the numbers they show, paging and
filters, the runs comparison, the live page's drift order, time to first token from a server's metrics,
and errors as 4xx naming the fault. (tests/test_dashboard_browser.py drives the pages in Chromium.)"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from modelcycle.dashboard import Sources, create_dashboard
from modelcycle.dashboard.standalone import standalone_app
from modelcycle.dashboard.ttft import first_token_quantiles
from modelcycle.monitor.database import open_database
from modelcycle.monitor.encryption import Keyring
from modelcycle.monitor.location import StoreLocation
from modelcycle.monitor.predictions import DriftRow
from modelcycle.registry import Registry
from modelcycle.serve import create_app
from modelcycle.serve.background import background_server
from tests.conftest import TINY_GPT, CliResult, train_into

MODEL = "breast-cancer-mlp"
STUDENT = "student"


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two versions of one model from two runs that differ in the learning rate, v1 in production."""
    home = train_into(
        tmp_path_factory.mktemp("dashboard-home"),
        ("breast-cancer-mlp.yaml", ["train.epochs=2"]),
        ("breast-cancer-mlp.yaml", ["train.epochs=2", "train.optimizer.lr=0.01"]),
    )
    registry = Registry(home)
    registry.set_alias(f"{MODEL}@1", "production", reason="first release")
    # another model's versions: one distilled from v1 (a child across models), one whose parent was written
    # by hand and names no version of this registry
    for parent in (f"{MODEL}@1", "hf-bert"):
        _register_copy(registry, f"{MODEL}@1", name=STUDENT, parent=parent)
    registry.close()
    return home


def _register_copy(registry: Registry, ref: str, *, name: str, parent: str) -> None:
    source = registry.open(ref)
    manifest = source.manifest.model_copy(
        update={
            "name": name,
            "version": None,
            "lineage": source.manifest.lineage.model_copy(update={"parent": parent}),
        }
    )
    with registry.builder(name) as builder:
        for path in source.path.iterdir():
            if path.is_file() and path.name != "bundle.json":
                shutil.copy2(path, builder.path / path.name)
        registry.register(builder, manifest, reason="a copy")


def _figure(page: str, chart: str) -> dict:
    match = re.search(rf'<script type="application/json" id="figure-{chart}">(.*?)</script>', page, re.S)
    assert match is not None, f"no {chart} figure on the page"
    return json.loads(match[1])


@pytest.mark.slow
def test_the_pages_show_the_registry_numbers(trained_home: Path) -> None:
    registry = Registry(trained_home)
    client = TestClient(create_dashboard(Sources(registry)))
    versions = {record.version: registry.bundle(record).manifest for record in registry.list_versions(MODEL)}

    models = client.get("/")
    assert models.status_code == 200
    assert MODEL in models.text
    assert "production → v1" in models.text

    model = client.get(f"/models/{MODEL}").text
    for number, manifest in versions.items():
        assert f'<tr data-version="{number}">' in model
        assert f"{manifest.metrics['test']['accuracy']:.4g}" in model
    metrics = _figure(model, "metrics")  # each (split, metric) over the versions, oldest first
    test_accuracy = next(trace for trace in metrics["data"] if trace["name"] == "test accuracy")
    assert test_accuracy["x"] == [1, 2]
    assert test_accuracy["y"] == [
        versions[1].metrics["test"]["accuracy"],
        versions[2].metrics["test"]["accuracy"],
    ]

    version = client.get(f"/models/{MODEL}/versions/2").text
    assert {"train", "valid", "test"} <= {trace["name"] for trace in _figure(version, "splits")["data"]}
    run_id = registry.resolve(f"{MODEL}@2").run_id
    assert f"/runs/{run_id}" in version
    assert "registered" in version  # its own events

    first = client.get(f"/models/{MODEL}/versions/1").text
    assert f'href="/models/{STUDENT}/versions/1">{STUDENT}@1</a>' in first  # its child, another model
    hand_written = client.get(f"/models/{STUDENT}/versions/2")
    assert hand_written.status_code == 200
    assert "<td>hf-bert</td>" in hand_written.text  # shown, not linked: no version of this registry

    runs, total = registry.runs.search()
    assert total == 2
    compare = client.get(f"/runs/compare?run={runs[0].id}&run={runs[1].id}").text
    differing = re.findall(r'<tr class="differs"><th>([^<]+)</th>', compare)
    assert "train.optimizer.lr" in differing
    assert "seed" not in differing  # same in both: shown, not highlighted
    assert '<tr class="same"><th>seed</th>' in compare
    curves = _figure(compare, "curve-1")
    assert len(curves["data"]) == 2  # one line per run, overlaid

    every = re.findall(r'<tr class="event-([a-z_]+)"', client.get("/timeline").text)
    assert every == ["registered", "registered", "promoted", "registered", "registered"]  # newest first
    timeline = client.get(f"/timeline?model={MODEL}").text
    assert re.findall(r'<tr class="event-([a-z_]+)"', timeline) == ["promoted", "registered", "registered"]
    assert "first release" in timeline
    assert re.findall(r'<tr class="event-([a-z_]+)"', client.get("/timeline?kind=promoted").text) == [
        "promoted"
    ]
    registry.close()


@pytest.mark.slow
def test_the_live_page_reads_the_store_and_puts_the_drifted_features_first(
    trained_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(trained_home)
    store = StoreLocation(trained_home / "live.db")
    now = time.time()
    rows = [
        (
            f"r{index}",
            0,
            MODEL,
            1 + index % 2,
            "v2",
            now - 3000 + index,
            float(index % 10 + 1),
            None,
            "benign" if index % 3 else "malignant",
            0.9,
            None,
        )
        for index in range(1000)
    ]
    drift = [
        DriftRow(MODEL, "mean texture", "ks", 0.6, False, 500, now - 10),
        DriftRow(MODEL, "mean area", "ks", 1e-30, True, 500, now - 10),
        DriftRow(MODEL, "worst area", "ks", 1e-9, True, 500, now - 10),
        DriftRow(MODEL, "smoothness", "wasserstein", 0.02, False, 500, now - 10),
        DriftRow(MODEL, "symmetry", "wasserstein", 0.4, True, 500, now - 10),
    ]
    with open_database(store) as database:
        database.append(rows)
        database.add_drift(drift)
    client = TestClient(create_dashboard(Sources(registry, store=store)))

    page = client.get(f"/models/{MODEL}/monitor?window=1h").text
    assert "1000 predictions in the last 1h" in page
    assert "p50 <b>5</b> ms, p95 <b>10</b> ms, p99 <b>10</b> ms" in page  # 1..10 ms, 100 predictions each
    order = re.findall(r"<tr class=\"(drifted|)\"><td>([^<]+)</td>", page)
    assert [feature for _, feature in order] == [
        "mean area",
        "worst area",
        "symmetry",
        "mean texture",
        "smoothness",
    ]
    figure = _figure(page, "drift")
    tests, distances = figure["data"]  # one panel per scale
    assert tests["y"] == ["mean area (ks)", "worst area (ks)", "mean texture (ks)"]
    assert tests["marker"]["color"] == ["#b00020", "#b00020", "#4472c4"]
    assert distances["y"] == ["symmetry (wasserstein)", "smoothness (wasserstein)"]
    traffic = _figure(page, "traffic")
    assert {trace["name"] for trace in traffic["data"]} == {"v1", "v2"}
    classes = _figure(page, "classes")
    assert sum(sum(trace["y"]) for trace in classes["data"]) == 1000
    # each slice drawn from a sample of 5: the counts stay whole, the shares are estimated from the samples
    monkeypatch.setattr("modelcycle.dashboard.views.SAMPLE_PER_SLICE", 5)
    sampled = client.get(f"/models/{MODEL}/monitor?window=1h").text
    assert "1000 predictions in the last 1h (charts from a sample of 100:" in sampled
    rates = _figure(sampled, "traffic")["data"]
    assert sum(sum(trace["y"]) for trace in rates) == pytest.approx(1000 * 60 / (3000 / 60), rel=0.05)
    assert sum(sum(trace["y"]) for trace in _figure(sampled, "classes")["data"]) == pytest.approx(
        1000, abs=10
    )
    # an encrypted store read without its keys: what is stored in plain (drift, quality) is still shown
    sealed = StoreLocation(trained_home / "sealed.db")
    with open_database(sealed, Keyring({"k1": bytes(range(32))}, "k1")) as database:
        database.append(rows[:10])
        database.add_drift(drift)
    without_keys = TestClient(create_dashboard(Sources(registry, store=sealed))).get(
        f"/models/{MODEL}/monitor"
    )
    assert without_keys.status_code == 200
    assert "Traffic not shown:" in without_keys.text
    assert _figure(without_keys.text, "drift")["data"][0]["y"][0] == "mean area (ks)"
    quiet = client.get(f"/models/{MODEL}/monitor?window=15m").text  # every prediction is older
    assert "No predictions in this window" in quiet
    registry.close()


def test_the_runs_page_pages_and_filters(registry: Registry) -> None:
    for index in range(60):
        run_id = registry.runs.start("tabular" if index % 2 else "text", {"train": {"lr": index / 1000}})
        registry.runs.log_metrics(run_id, {"valid_accuracy": index / 100}, step=1)
        registry.runs.finish(run_id, "failed" if index == 7 else "finished")
    client = TestClient(create_dashboard(Sources(registry)))

    first = client.get("/runs").text
    assert "page 1 of 2 (60 in all)" in first
    assert len(re.findall(r'name="run" value="', first)) == 50
    assert len(re.findall(r'name="run" value="', client.get("/runs?page=2").text)) == 10
    assert "page 1 of 1 (30 in all)" not in client.get("/runs?name=text").text  # one page: no pager
    assert len(re.findall(r'name="run" value="', client.get("/runs?name=text").text)) == 30
    failed = client.get("/runs?status=failed").text
    assert len(re.findall(r'name="run" value="', failed)) == 1
    assert len(re.findall(r'name="run" value="', client.get("/runs?text=0.059").text)) == 1


def test_bad_requests_get_a_4xx_that_names_the_fault(registry: Registry) -> None:
    client = TestClient(create_dashboard(Sources(registry)))
    cases = {
        "/models/nothing": (404, "model 'nothing' is not registered"),
        "/runs?page=0": (400, "page"),
        "/runs/compare?run=abc": (400, "compare needs 2 to 10 runs, got 1"),
        "/runs/ffff": (404, "run 'ffff' matches no run"),
        "/models/x/versions/zero": (400, "version"),
        "/models/x/monitor?window=2y": (400, "window: '2y' is not one of"),
        "/nowhere": (404, "Not Found"),
    }
    for url, (status, words) in cases.items():
        answer = client.get(url)
        assert answer.status_code == status, url
        assert words in answer.json()["error"], url
    page = client.get("/models/nothing", headers={"Accept": "text/html"})
    assert page.status_code == 404
    assert "text/html" in page.headers["content-type"]
    assert "model &#x27;nothing&#x27; is not registered" in page.text


def test_time_to_first_token_is_read_from_the_server_histogram() -> None:
    exposition = "\n".join(
        [
            "# TYPE modelcycle_time_to_first_token_seconds histogram",
            *(
                f'modelcycle_time_to_first_token_seconds_bucket{{le="{le}",model="lm"}} {count}'
                for le, count in (("0.1", 0), ("0.25", 50), ("0.5", 90), ("1.0", 100), ("+Inf", 100))
            ),
            'modelcycle_time_to_first_token_seconds_count{model="lm"} 100',
            'modelcycle_time_to_first_token_seconds_sum{model="lm"} 25',
        ]
    ).encode()
    found = first_token_quantiles(lambda: exposition, "lm")
    assert found is not None
    assert found["count"] == 100
    assert found["p50"] == pytest.approx(0.25)  # the 50th of 100 is the top of the (0.1, 0.25] bucket
    assert found["p95"] == pytest.approx(0.75)  # halfway through (0.5, 1.0]
    assert found["p99"] == pytest.approx(0.95)
    assert first_token_quantiles(lambda: exposition, "other") is None


@pytest.mark.slow
def test_actions_reach_the_admin_api_only_with_its_token(trained_home: Path, tmp_path: Path) -> None:
    """Through ``modelcycle ui --server``'s forwarding and on the server's own ``/ui``: without the token a
    promotion is refused and nothing moves; with it the alias moves and the timeline shows it."""
    registry = Registry(trained_home)
    server_app = create_app(registry, [MODEL], admin_token="s3cret")
    with background_server(server_app) as server:
        assert httpx.get(f"{server}/ui/models/{MODEL}").status_code == 200  # mounted on the server
        ui = TestClient(standalone_app(Sources(registry), server=server))
        refused = ui.post(f"/admin/models/{MODEL}/promote", json={"version": 2})
        assert refused.status_code == 401
        assert "Bearer" in refused.json()["error"]
        assert registry.resolve(f"{MODEL}@production").version == 1
        done = ui.post(
            f"/admin/models/{MODEL}/promote", json={"version": 2}, headers={"Authorization": "Bearer s3cret"}
        )
        assert done.status_code == 200
        assert done.json()["primary"]["version"] == 2
        assert registry.resolve(f"{MODEL}@production").version == 2
        timeline = ui.get("/ui/timeline").text
        assert re.findall(r'<tr class="event-([a-z_]+)"', timeline)[0] == "promoted"
        rolled = ui.post(f"/admin/models/{MODEL}/rollback", headers={"Authorization": "Bearer s3cret"})
        assert rolled.status_code == 200
        assert registry.resolve(f"{MODEL}@production").version == 1
    read_only = TestClient(standalone_app(Sources(registry))).get(f"/ui/models/{MODEL}").text
    assert "Read-only: this dashboard has no server to act on" in read_only
    assert (
        TestClient(standalone_app(Sources(registry))).post(f"/admin/models/{MODEL}/promote").status_code
        == 404
    )
    gone = TestClient(standalone_app(Sources(registry), server="http://127.0.0.1:9"))
    assert gone.post(f"/admin/models/{MODEL}/rollback").status_code == 502
    registry.close()


def test_bounds_on_numbers_are_a_400_not_a_database_overflow(registry: Registry) -> None:
    client = TestClient(create_dashboard(Sources(registry)))
    for url in (
        "/runs?page=100000000000000000000",
        "/timeline?before=100000000000000000000",
        "/models/m/versions/99999999999",
    ):
        answer = client.get(url)
        assert answer.status_code == 400, url
        assert "less than or equal to 2147483647" in answer.json()["error"]


def test_the_forwarding_to_a_server_takes_only_admin_calls_from_the_dashboards_own_pages(
    registry: Registry,
) -> None:
    seen: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return httpx.Response(200, json={"ok": True})

    client = TestClient(standalone_app(Sources(registry), server="http://127.0.0.1:1"))
    mounted = httpx.MockTransport(server)
    original = httpx.AsyncClient.__init__

    def through_mock(self: httpx.AsyncClient, **options: object) -> None:
        original(self, transport=mounted, **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpx.AsyncClient, "__init__", through_mock)
        assert client.post(f"/admin/models/{MODEL}/promote", json={"version": 1}).status_code == 200
        assert client.get(f"/admin/models/{MODEL}").status_code == 200
        walked = client.post("/admin/models/..%2F..%2Fv1%2Ffeedback", content=b"{}")
        assert walked.status_code == 404
        assert "not an admin call" in walked.json()["error"]
        other_site = client.post(
            f"/admin/models/{MODEL}/promote", json={"version": 1}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert other_site.status_code == 403
        assert (
            client.post(
                f"/admin/models/{MODEL}/promote", json={}, headers={"Origin": "http://evil.example"}
            ).status_code
            == 403
        )
        form = client.post(
            f"/admin/models/{MODEL}/promote", content=b"version=1", headers={"Content-Type": "text/plain"}
        )
        assert form.status_code == 415
        huge = client.post(
            f"/admin/models/{MODEL}/canary",
            content=b"x" * 70_000,
            headers={"Content-Type": "application/json"},
        )
        assert huge.status_code == 413
    assert seen == [f"POST /admin/models/{MODEL}/promote", f"GET /admin/models/{MODEL}"]
    hosts = TestClient(standalone_app(Sources(registry), hosts=["127.0.0.1"]))
    assert hosts.get("/ui/").status_code == 400  # the test client's Host, "testserver", is not taken


def test_beyond_this_machine_the_servers_pages_ask_for_the_admin_token(registry: Registry) -> None:
    from modelcycle.config import ServeConfig

    app = create_app(registry, [], ServeConfig(host="0.0.0.0", allow_plain_http=True), admin_token="t0ken")
    client = TestClient(app)  # not started: the pages need no loaded model
    refused = client.get("/ui/")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic")
    assert "admin token" in refused.json()["error"]
    assert client.get("/ui/", auth=("anyone", "wrong")).status_code == 401
    assert client.get("/ui/", auth=("anyone", "t0ken")).status_code == 200
    assert TestClient(create_app(registry, [])).get("/ui/").status_code == 200  # on 127.0.0.1: open


@pytest.mark.slow
def test_importance_that_cannot_be_kept_is_reported_not_asked_for_forever(
    trained_home: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(trained_home, home)
    (home / "dashboard").write_text("a file where the cache folder would go")
    registry = Registry(home)
    client = TestClient(create_dashboard(Sources(registry)))
    url = f"/api/models/{MODEL}/versions/1/importance"
    deadline = time.monotonic() + 120
    while (answer := client.get(url)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert answer.status_code == 200
    assert answer.json()["status"] == "unavailable"
    assert "NotADirectoryError" in answer.json()["reason"] or "FileExistsError" in answer.json()["reason"]
    registry.close()


def test_the_ui_command_refuses_what_would_expose_the_token(cli: Callable[..., CliResult]) -> None:
    beyond = cli("ui", "--host", "0.0.0.0")
    assert beyond.exit_code != 0
    assert "--host 0.0.0.0: the dashboard serves plain HTTP" in beyond.stderr
    plain = cli("ui", "--server", "http://models.example:8000")
    assert plain.exit_code != 0
    assert "the admin token would cross the network in clear" in plain.stderr
    assert "Traceback" not in beyond.stderr + plain.stderr
    assert "--server ftp://x: give the server's URL" in cli("ui", "--server", "ftp://x").stderr


@pytest.mark.slow
def test_a_language_models_live_page_on_its_server_shows_the_time_to_first_token(tmp_path: Path) -> None:
    home = train_into(tmp_path / "home", ("tiny-gpt.yaml", TINY_GPT))
    registry = Registry(home)
    with background_server(create_app(registry, ["tiny-gpt"])) as server:
        for prompt in ("to be", "or not"):
            answer = httpx.post(
                f"{server}/v1/completions",
                json={"model": "tiny-gpt", "prompt": prompt, "max_tokens": 4},
                timeout=60,
            )
            assert answer.status_code == 200
        page = httpx.get(f"{server}/ui/models/tiny-gpt/monitor", timeout=30).text
    found = re.search(
        r"Time to first token \(since the server started, (\d+) generations\): p50 <b>([\d.e-]+)</b>", page
    )
    assert found is not None
    assert int(found[1]) == 2
    assert 0 < float(found[2]) < 10_000  # milliseconds
    registry.close()
