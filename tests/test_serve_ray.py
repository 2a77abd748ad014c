"""``modelcycle serve REF… --ray ADDRESS`` on a real two-node Ray cluster on 127.0.0.1 (``ray start --head``
and a second ``ray start --address``), with the registry and the prediction store on a real PostgreSQL
server: the protocols' own clients through Ray's proxy, promotions under load reaching every replica, one
scrape target per replica, every answer stored once, a canary decided by live quality, and a replica killed
under load replaced by Ray. The tests share one deployment and run in order."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from modelcycle.config import UpdateConfig
from modelcycle.predictor import Predictor, generate, model_tensors, predict, training_split
from modelcycle.registry import Registry
from modelcycle.testing.ray_cluster import local_ray_cluster, wait_for_line
from modelcycle.update import AdminClient
from modelcycle.update.loop import UpdateResult, canary
from tests.conftest import EXAMPLES, ROOT, TINY_GPT, free_port, train_into

pytest.importorskip("ray.serve", reason="the ray extra is not installed (pip install 'modelcycle[ray]')")
pytestmark = [pytest.mark.slow, pytest.mark.integration]

TOKEN = "ray-admin-token"
MODEL = "breast-cancer-mlp"
FAST = UpdateConfig(canary_min_samples=12, canary_percent=50, poll_s=0.2, canary_timeout_s=60)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """Two Ray nodes on 127.0.0.1, one CPU each."""
    with local_ray_cluster(nodes=2, cpus_per_node=1) as address:
        yield address


@dataclass
class Deployment:
    url: str
    home: Path
    database_url: str
    answered: Counter[str] = field(default_factory=Counter)  # 200s by model, for the store's count


@pytest.fixture(scope="module")
def deployment(
    ray_cluster: str, postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """Two versions of the MLP and tiny-gpt served by two replicas; registry and store on PostgreSQL."""
    database_url = _new_database(postgres_server)
    # directly under /tmp: the path is the same on both nodes of this machine, as a shared folder would be
    home = Path(tempfile.mkdtemp(prefix="modelcycle-ray-home-"))
    environment = {**os.environ, "MODELCYCLE_HOME": str(home), "MODELCYCLE_DATABASE_URL": database_url}
    os.environ["MODELCYCLE_DATABASE_URL"] = database_url
    try:
        mlp = ["train.epochs=15"]
        train_into(home, ("breast-cancer-mlp.yaml", mlp), ("breast-cancer-mlp.yaml", [*mlp, "seed=1"]))
        train_into(home, ("tiny-gpt.yaml", TINY_GPT))
    finally:
        del os.environ["MODELCYCLE_DATABASE_URL"]
    config = yaml.safe_load((EXAMPLES / "breast-cancer-mlp.yaml").read_text())
    config["monitor"] = {"store": database_url, "max_records_per_s": None, "interval_s": 3600}
    config_file = tmp_path_factory.mktemp("ray-config") / "serve.yaml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        sys.executable, "-m", "modelcycle", "serve", f"{MODEL}@1", "tiny-gpt", "--config", str(config_file),
        "--ray", ray_cluster, "--replicas", "2", "--port", str(port),
    ]  # fmt: skip
    server = subprocess.Popen(
        command,
        env={**environment, "MODELCYCLE_ADMIN_TOKEN": TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        wait_for_line(server, "serving on", timeout_s=300, output=output)
        yield Deployment(f"http://127.0.0.1:{port}", home, database_url)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(home, ignore_errors=True)
    assert server.returncode == 0, "".join(output)


def _new_database(server_url: str) -> str:
    from sqlalchemy.engine import make_url

    name = f"ray_{os.getpid()}_{int(time.time())}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@dataclass
class Load:
    """Requests from ``threads`` clients until stopped, bounded in count and time: statuses and versions."""

    deployment: Deployment
    rows: list[dict[str, float]]
    threads: int = 4
    limit: int = 20_000
    seconds: float = 240.0
    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        deadline = time.monotonic() + self.seconds
        for worker in range(self.threads):
            thread = threading.Thread(target=self._send, args=(worker, deadline))
            thread.start()
            self._workers.append(thread)
        return self

    def _send(self, worker: int, deadline: float) -> None:
        with httpx.Client(base_url=self.deployment.url, timeout=30) as client:
            for index in range(self.limit // self.threads):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                row = self.rows[(worker + index) % len(self.rows)]
                try:
                    answer = client.post(f"/v1/models/{MODEL}:predict", json={"instances": [row]})
                except httpx.HTTPError:
                    self.statuses[0] += 1  # no answer at all: a failed request too
                    continue
                self.statuses[answer.status_code] += 1
                if answer.status_code == 200:
                    self.versions[answer.headers["X-Model-Version"]] += 1
                    self.deployment.answered[MODEL] += 1

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout=60)

    @property
    def failed(self) -> int:
        return sum(count for status, count in self.statuses.items() if status != 200)


def _rows(deployment: Deployment) -> tuple[list[dict[str, float]], list[str]]:
    registry = Registry(deployment.home, database_url=deployment.database_url)
    test = training_split(registry.open(f"{MODEL}@1"), "test")
    registry.close()
    return test.frame[test.features].to_dict(orient="records"), test.frame[test.target].astype(str).tolist()


def test_the_protocols_own_clients_work_through_rays_proxy(deployment: Deployment) -> None:
    import openai
    import tritonclient.http as triton

    registry = Registry(deployment.home, database_url=deployment.database_url)
    bundle = registry.open(f"{MODEL}@1")
    predictor = Predictor.load(bundle)
    inputs = model_tensors(predictor.preprocessor, predictor.encoder, training_split(bundle, "test")).inputs
    client = triton.InferenceServerClient(url=deployment.url.removeprefix("http://"))
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    metadata = client.get_model_metadata(MODEL)
    tensors = []
    for spec in metadata["inputs"]:
        batch = np.ascontiguousarray(inputs[spec["name"]][:4])
        tensor = triton.InferInput(spec["name"], list(batch.shape), spec["datatype"])
        tensor.set_data_from_numpy(batch)
        tensors.append(tensor)
    result = client.infer(MODEL, tensors)
    output = metadata["outputs"][0]["name"]
    expected = predict(predictor.model, {name: array[:4] for name, array in inputs.items()})
    np.testing.assert_allclose(result.as_numpy(output), expected, atol=1e-5)
    client.close()
    deployment.answered[MODEL] += 1

    greedy = generate(Predictor.load(registry.open("tiny-gpt")), "To be", max_new_tokens=8, temperature=0)
    registry.close()
    chat = openai.OpenAI(base_url=f"{deployment.url}/v1", api_key="unused", max_retries=0, timeout=60)
    completion = chat.completions.create(model="tiny-gpt", prompt="To be", max_tokens=8, temperature=0)
    assert completion.choices[0].text == greedy.text
    streamed = chat.completions.create(
        model="tiny-gpt", prompt="To be", max_tokens=8, temperature=0, stream=True
    )
    assert "".join(piece.choices[0].text for piece in streamed) == greedy.text
    deployment.answered["tiny-gpt"] += 2


def test_promotions_under_load_reach_every_replica_and_fail_no_request(deployment: Deployment) -> None:
    rows, _ = _rows(deployment)
    admin = AdminClient(deployment.url, TOKEN)
    delays = []
    with Load(deployment, rows) as load, httpx.Client(base_url=deployment.url, timeout=30) as probe:
        for turn in range(20):
            version = 2 if turn % 2 == 0 else 1
            promoted_at = time.monotonic()
            status = admin.promote(MODEL, version)
            assert status["primary"]["version"] == version
            assert status["propagated"] is True
            delays.append(_until_every_answer_is(probe, rows[0], version, promoted_at, deployment))
    print(
        f"\n20 promotions: slowest reached every replica in {max(delays):.2f} s; load {dict(load.statuses)}"
    )
    assert load.failed == 0, load.statuses
    assert max(delays) <= 5.0, delays
    assert load.versions["1"] > 0
    assert load.versions["2"] > 0
    registry = Registry(deployment.home, database_url=deployment.database_url)
    assert registry.resolve(f"{MODEL}@production").version == 1  # the registry followed every promotion
    promotions = [event.version for event in registry.history(MODEL) if event.kind == "promoted"]
    registry.close()
    assert promotions == [2, 1] * 10  # recorded once each, by the replica that took the call


def _until_every_answer_is(
    probe: httpx.Client, row: dict[str, float], version: int, since: float, deployment: Deployment
) -> float:
    """Seconds from ``since`` until 16 answers in a row (the proxy spreads them over both replicas) come from
    ``version``; fails after 5 s."""
    in_a_row = 0
    while in_a_row < 16:
        answer = probe.post(f"/v1/models/{MODEL}:predict", json={"instances": [row]})
        assert answer.status_code == 200, answer.text
        deployment.answered[MODEL] += 1
        in_a_row = in_a_row + 1 if answer.headers["X-Model-Version"] == str(version) else 0
        assert time.monotonic() - since < 5.0, f"a replica still answers with another version than {version}"
    return time.monotonic() - since


def test_every_answer_from_both_replicas_is_in_the_postgresql_store(deployment: Deployment) -> None:
    engine = create_engine(deployment.database_url)
    deadline = time.monotonic() + 30  # each replica's writer stores what it buffered within a second
    try:
        while True:
            with engine.connect() as connection:
                counts = text("SELECT model, COUNT(DISTINCT request_id) FROM predictions GROUP BY model")
                stored = {model: count for model, count in connection.execute(counts)}
            if stored == dict(deployment.answered) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        engine.dispose()
    assert stored == dict(deployment.answered)


def test_a_canary_on_the_cluster_is_decided_by_live_quality(deployment: Deployment) -> None:
    rows, truth = _rows(deployment)
    registry = Registry(deployment.home, database_url=deployment.database_url)
    admin = AdminClient(deployment.url, TOKEN)
    outcomes = []
    for canary_breaks in (True, False):
        time.sleep(3.0)  # the canary's window starts 2 s before it: clear of the last round's labels
        stop = threading.Event()
        sender = threading.Thread(
            target=_labelled_traffic, args=(deployment, rows, truth, canary_breaks, stop)
        )
        sender.start()
        try:
            result = canary(
                registry,
                admin,
                UpdateResult(MODEL, f"{MODEL}@1", "registered", "test", candidate=f"{MODEL}@2"),
                registry.open(f"{MODEL}@2"),
                registry.open(f"{MODEL}@1"),
                FAST,
                deployment.database_url,
            )
        finally:
            stop.set()
            sender.join(timeout=60)
        outcomes.append((result.outcome, result.reason))
    assert [outcome for outcome, _ in outcomes] == ["rolled_back", "promoted"], outcomes
    assert registry.resolve(f"{MODEL}@production").version == 2
    kinds = [event.kind for event in registry.history(MODEL)]
    assert "update_rolled_back" in kinds
    assert "update_promoted" in kinds
    registry.close()


def _labelled_traffic(
    deployment: Deployment,
    rows: list[dict[str, float]],
    truth: list[str],
    breaks: bool,
    stop: threading.Event,
) -> None:
    """Predictions and their feedback until stopped (at most 2,000): production's answers get the truth; the
    canary's (version 2) are all marked wrong when it ``breaks`` and all right otherwise."""
    with httpx.Client(base_url=deployment.url, timeout=30) as client:
        for index in range(2000):
            if stop.is_set():
                return
            row = index % len(rows)
            answer = client.post(f"/v1/models/{MODEL}:predict", json={"instances": [rows[row]]})
            if answer.status_code != 200:
                continue
            deployment.answered[MODEL] += 1
            label = truth[row]
            if answer.headers["X-Model-Version"] == "2":
                predicted = answer.json()["predictions"][0]["label"]
                label = ("benign" if predicted == "malignant" else "malignant") if breaks else predicted
            client.post("/v1/feedback", json={"request_id": answer.json()["request_id"], "label": label})


def test_each_replica_is_a_scrape_target_that_prometheus_finds_with_the_shipped_config(
    deployment: Deployment, tmp_path: Path
) -> None:
    targets = sorted((deployment.home / "ray" / "targets").glob("*.json"))
    assert len(targets) == 2
    counted = 0.0
    for target in targets:
        (entry,) = yaml.safe_load(target.read_text())
        served = _answered(httpx.get(f"http://{entry['targets'][0]}/metrics", timeout=10).text)
        counted += served
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus (Debian: prometheus) missing")
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus-ray.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config.pop("rule_files")
    config["scrape_configs"][0]["file_sd_configs"][0]["files"] = [
        str(deployment.home / "ray" / "targets" / "*.json")
    ]
    config["scrape_configs"][0]["file_sd_configs"][0]["refresh_interval"] = "1s"
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    answered = f'sum(modelcycle_requests_total{{model="{MODEL}",protocol="v1",code="200"}})'
    query = f"{answered} and on() count(up == 1) == 2"  # once both replicas are scraped
    total = None
    try:
        deadline = time.monotonic() + 60
        while total is None and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                reply = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=5)
            except httpx.HTTPError:
                continue
            result = reply.json().get("data", {}).get("result", [])
            total = float(result[0]["value"][1]) if result else None
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert counted == deployment.answered[MODEL] - 1  # every simple answer of the MLP (one of them was v2's)
    assert total == counted  # both replicas scraped, their counts summed


def _answered(metrics: str) -> float:
    """The simple API's 200s for the MLP in one replica's metrics, every version together."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "modelcycle_requests_total"
        and sample.labels.get("model") == MODEL
        and sample.labels.get("protocol") == "v1"
        and sample.labels.get("code") == "200"
    )


def test_a_replica_killed_under_load_is_replaced_by_ray(deployment: Deployment) -> None:
    rows, _ = _rows(deployment)
    folder = deployment.home / "ray" / "targets"
    before = {path.name for path in folder.glob("*.json")}
    victim = _replica_pids()[0]
    with Load(deployment, rows, threads=4) as load:
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while {path.name for path in folder.glob("*.json")} <= before and time.monotonic() < deadline:
            time.sleep(0.5)
        replaced = time.monotonic() < deadline
        time.sleep(2.0)  # the new replica takes traffic
    print(f"\nSIGKILL of one replica of two under 4 clients: {dict(load.statuses)}")
    assert replaced, "Ray started no replacement replica within 120 s"
    assert len(_replica_pids()) == 2
    assert load.statuses[200] > 0
    assert load.failed <= 4, load.statuses  # at most the requests in flight on that replica
    # the command's references name version 1; the canary promoted version 2, and the new replica serves it
    # from its first request: every answer comes from version 2
    with httpx.Client(base_url=deployment.url, timeout=30) as client:
        versions = {
            client.post(f"/v1/models/{MODEL}:predict", json={"instances": [rows[0]]}).headers[
                "X-Model-Version"
            ]
            for _ in range(32)
        }
    assert versions == {"2"}


def _replica_pids() -> list[int]:
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [
        int(line.split()[0]) for line in listing.splitlines() if "ServeReplica:modelcycle:ModelServer" in line
    ]
