"""Encryption at rest of the prediction store: with keys, the store file holds none of what was sent (the
bytes are searched), every reader gets it back, rows sealed with an older key still read and ``rotate-key``
moves them to the current one, and a missing key, a tampered value or one moved to another row is a clear
error, never garbage."""

from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from modelcycle.config import EncryptionConfig, MonitorConfig, ServeConfig
from modelcycle.data import TargetEncoder
from modelcycle.errors import ConfigError, EncryptionError
from modelcycle.monitor.database import connect, open_database
from modelcycle.monitor.encryption import ENVIRONMENT, Keyring, store_keys
from modelcycle.monitor.predictions import LabelledPrediction, Resealed
from modelcycle.monitor.store import PredictionRecord, PredictionStore
from modelcycle.predictor import Predictor, training_split
from modelcycle.registry import Registry
from modelcycle.serve import create_app
from modelcycle.update.feedback import labelled_traffic
from tests.conftest import EXAMPLES, train_into
from tests.store_inspection import run_sql, stored_text
from tests.test_serve import wait_ready

pytest_plugins = ["tests.store_backends"]  # store_location: the tests that take it run on each backend
KEYS = {name: base64.b64encode(bytes([index]) * 32).decode() for index, name in enumerate(("a", "b"))}
CLASSIFIER = TargetEncoder("classification")
CLASSIFIER.classes_ = ["approved-xyzzy", "declined-plugh"]
SENT = {"name": "Quetzalli Vandersloot", "note": "lives at 42 Wallaby Way", "account": 918273645019}
TEXT = "a free-text input from Oyelaran"
PLAINTEXT = ("Vandersloot", "Wallaby", "918273645019", "Oyelaran", "approved-xyzzy", "declined-plugh")


def ring(*ids: str) -> Keyring:
    """The keys named, the first current."""
    return Keyring.parse(",".join(f"{key_id}:{KEYS[key_id]}" for key_id in ids), "the test")


def store_bytes(path: Path) -> str:
    """Every byte of a SQLite store on disk (the database, its write-ahead log and index), as text."""
    return stored_text(str(path))


def write(path: str | Path, keys: Keyring | None, request_id: str = "r1") -> None:
    """Two rows of a request through the server's store and its writer process, and feedback on the first."""
    store = PredictionStore(path, keys=keys)
    outputs = np.array([[0.0, 1.0], [1.0, 0.0]])
    record = PredictionRecord(request_id, "m", 1, "v1", time.time(), 1.0, [SENT, TEXT], outputs, CLASSIFIER)
    store.record(record)
    assert store.flush()
    with store.open() as database:
        database.add_feedback(request_id, 0, "declined-plugh", None, created=time.time())
    store.close()


def test_an_encrypted_store_holds_no_plaintext_of_what_was_sent(tmp_path: Path, store_location: str) -> None:
    plain, sealed = tmp_path / "plain" / "monitor.db", store_location
    write(plain, None)
    write(sealed, ring("a"))
    assert all(text in store_bytes(plain) for text in PLAINTEXT)  # the search finds what is there
    on_disk = stored_text(sealed)
    assert [text for text in PLAINTEXT if text in on_disk] == []
    assert "enc:v1:a:" in on_disk
    with open_database(sealed, ring("a")) as database:
        inputs = [row.inputs for row in database.recent_inputs("m", since=0.0, limit=10)]
        assert sorted(inputs, key=str) == sorted([SENT, TEXT], key=str)
        (labelled,) = database.labelled("m", since=0.0)
        assert labelled.label == "declined-plugh"
        assert labelled.probabilities == pytest.approx([1 / (1 + np.e), np.e / (1 + np.e)], abs=1e-6)
        assert sorted(row.predicted_class for row in database.traffic("m", since=0.0)) == [
            "approved-xyzzy",
            "declined-plugh",
        ]
        assert database.labelled_inputs("m", since=0.0)[0].inputs == SENT
        assert database.sealing_key() == "a"


def test_regression_values_and_their_feedback_are_sealed_as_numbers(store_location: str) -> None:
    path = store_location
    with open_database(path, ring("a")) as database:
        row = ("r", 0, "m", 1, "v1", 10.0, 2.0, '{"income": 71234.5}', None, 68421.25, None)
        database.append([row])
        database.add_feedback("r", 0, None, 70123.75, created=11.0)
        assert database.labelled("m", since=0.0) == [LabelledPrediction(None, 70123.75, 68421.25, None)]
        assert database.traffic("m", since=0.0)[0].predicted_class is None  # a value is no class
    (stored,) = run_sql(path, "SELECT p.score, f.value FROM predictions p, feedback f")
    assert all(value.startswith("enc:v1:a:") for value in stored)


def test_without_its_key_an_encrypted_store_is_a_clear_error(store_location: str) -> None:
    path = store_location
    write(path, ring("a"))
    with open_database(path) as database, pytest.raises(EncryptionError) as raised:
        database.recent_inputs("m", since=0.0, limit=10)
    assert str(path) in raised.value.message
    assert "encrypted with key 'a', and no keys were given" in raised.value.message
    assert "MODELCYCLE_STORE_KEYS" in str(raised.value)
    assert raised.value.http_status == 503  # unavailable: not the client's fault, and no 500
    with (
        open_database(path, ring("b")) as database,
        pytest.raises(EncryptionError, match=r"key 'a'.*not among"),
    ):
        database.labelled("m", since=0.0)
    with pytest.raises(ConfigError, match=r"encrypted with key 'a', but monitor.encryption is off"):
        PredictionStore(path)  # a server would store on but fail every round: it does not start
    with pytest.raises(ConfigError, match=r"encrypted with key 'a', but the keys given are b"):
        PredictionStore(path, keys=ring("b"))


def test_rows_sealed_with_an_older_key_read_after_rotation_and_rotate_moves_them(store_location: str) -> None:
    path = store_location
    write(path, ring("a"), "old")
    write(path, ring("b", "a"), "new")  # b is current now, a still opens
    with open_database(path, ring("b", "a")) as database:
        assert database.sealing_key() == "b"
        assert len(database.labelled_inputs("m", since=0.0)) == 2
        assert database.reseal() == Resealed(predictions=2, feedback=1)  # only what a sealed
        assert database.reseal() == Resealed(predictions=0, feedback=0)
    with open_database(path, ring("b")) as database:  # a can go
        assert [row.inputs for row in database.labelled_inputs("m", since=0.0)] == [SENT, SENT]
    assert "enc:v1:a:" not in stored_text(path)


def test_turning_encryption_on_later_seals_the_plain_rows_and_leaves_no_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "monitor.db"
    write(path, None)
    write(path, ring("a"), "sealed")
    # the server's connection stays open (its log stays too), as it would while it runs
    with connect(path), open_database(path, ring("a")) as database:
        assert len(database.recent_inputs("m", since=0.0, limit=10)) == 4  # plain rows read as they are
        assert database.reseal() == Resealed(predictions=2, feedback=1)
        assert database.recent_inputs("m", since=0.0, limit=10)[-1].inputs == SENT
        on_disk = store_bytes(path)
    assert [text for text in PLAINTEXT if text in on_disk] == []  # nor in free space or the log


def test_a_tampered_or_moved_value_is_an_error_not_garbage(store_location: str) -> None:
    path = store_location
    write(path, ring("a"))
    write(path, ring("a"), "r2")
    ((sealed,),) = run_sql(path, "SELECT inputs FROM predictions WHERE request_id = 'r2' AND row = 0")
    flipped = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    run_sql(path, "UPDATE predictions SET inputs = ? WHERE request_id = 'r2' AND row = 0", (flipped,))
    with open_database(path, ring("a")) as database, pytest.raises(EncryptionError) as raised:
        database.recent_inputs("m", since=0.0, limit=10)
    assert "predictions.inputs of request 'r2' row 0: does not authenticate under key 'a'" in str(
        raised.value
    )
    run_sql(  # the first row's inputs copied onto another's, and into another column
        path,
        "UPDATE predictions SET inputs = "
        "(SELECT inputs FROM predictions WHERE request_id = 'r1' AND row = 0) WHERE request_id = 'r2'",
    )
    run_sql(path, "UPDATE predictions SET prediction = inputs WHERE request_id = 'r1'")
    with open_database(path, ring("a")) as database:
        with pytest.raises(
            EncryptionError, match=r"predictions\.inputs of request 'r2'.*moved from another row"
        ):
            database.labelled_inputs("m", since=0.0)
        with pytest.raises(EncryptionError, match=r"predictions\.prediction of request 'r1'"):
            database.traffic("m", since=0.0)


def test_keys_come_from_the_environment_or_a_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on = EncryptionConfig(enabled=True)
    assert store_keys(EncryptionConfig()) is None
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    with pytest.raises(ConfigError, match=f"{ENVIRONMENT} is not set and no key_file is given"):
        store_keys(on)
    monkeypatch.setenv(ENVIRONMENT, f"b:{KEYS['b']}, a:{KEYS['a']}")
    keys = store_keys(on)
    assert keys is not None
    assert (keys.current, keys.ids) == ("b", ["b", "a"])
    assert KEYS["b"] not in repr(keys)
    key_file = tmp_path / "store.keys"
    key_file.write_text(f"# rotated in May\na:{KEYS['a']}\nb:{KEYS['b']}  # the old one\n")
    from_file = store_keys(EncryptionConfig(enabled=True, key_file=str(key_file)))  # the file wins
    assert from_file is not None
    assert (from_file.current, from_file.ids) == ("a", ["a", "b"])
    with pytest.raises(ConfigError, match=r"monitor.encryption.key_file: .*absent.keys: cannot read it"):
        store_keys(EncryptionConfig(enabled=True, key_file=str(tmp_path / "absent.keys")))
    short = base64.b64encode(b"x" * 16).decode()
    for given, expected in (
        (f"a:{short}", "key 'a' is not 32 bytes in base64"),
        (f"a:{KEYS['a']},a:{KEYS['b']}", "key id 'a' is given twice"),
        (f"a/b:{KEYS['a']}", "key 1 is not 'id:base64-key'"),
        (" , ", "no keys in it"),
    ):
        monkeypatch.setenv(ENVIRONMENT, given)
        with pytest.raises(ConfigError, match=f"{ENVIRONMENT}: {expected}") as raised:
            store_keys(on)
        assert KEYS["a"] not in str(raised.value)
        assert short not in str(raised.value)


def _config(tmp_path: Path, store: str | Path, encryption: bool) -> Path:
    config = tmp_path / f"config-{encryption}.yaml"
    section = f"\nmonitor:\n  store: {store}\n  encryption:\n    enabled: {str(encryption).lower()}\n"
    config.write_text((EXAMPLES / "breast-cancer-mlp.yaml").read_text() + section)
    return config


def test_rotate_key_re_encrypts_the_store_and_says_what_it_did(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch, store_location: str
) -> None:
    store = store_location
    write(store, ring("a"))
    monkeypatch.setenv(ENVIRONMENT, f"b:{KEYS['b']},a:{KEYS['a']}")
    done = cli("monitor", "rotate-key", "--config", str(_config(tmp_path, store, encryption=True)))
    assert done.exit_code == 0, done.stderr
    assert "2 predictions and 1 feedback rows re-encrypted under key 'b'" in done.stdout
    off = cli("monitor", "rotate-key", "--config", str(_config(tmp_path, store, encryption=False)))
    assert off.exit_code == 2
    assert off.stderr.startswith("error: monitor.encryption is off")
    monkeypatch.delenv(ENVIRONMENT)
    unset = cli("monitor", "rotate-key", "--config", str(_config(tmp_path, store, encryption=True)))
    assert unset.exit_code == 2
    assert ENVIRONMENT in unset.stderr
    assert "Traceback" not in unset.stderr + off.stderr


@pytest.fixture(scope="module")
def mlp_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_into(tmp_path_factory.mktemp("encrypted"), ("breast-cancer-mlp.yaml", ["train.epochs=2"]))


def test_a_server_on_an_encrypted_store_stores_nothing_readable_and_every_reader_reads_it(
    mlp_home: Path, tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch, store_location: str
) -> None:
    monkeypatch.setenv(ENVIRONMENT, f"a:{KEYS['a']}")
    home = shutil.copytree(mlp_home, tmp_path / "home")
    monkeypatch.setenv("MODELCYCLE_HOME", str(home))
    store = store_location
    registry = Registry(home)
    dataset = training_split(registry.open("breast-cancer-mlp@1"), "test")
    frame = dataset.frame.iloc[:12]
    instances = frame[dataset.features].to_dict(orient="records")
    for index, instance in enumerate(instances):  # numbers no other part of the file holds by chance
        instance["mean radius"] = 14.0 + index / 1000 + 0.000123456789
    truth = [str(label) for label in frame[dataset.target]]
    monitoring = MonitorConfig(store=str(store), interval_s=3600, encryption=EncryptionConfig(enabled=True))
    app = create_app(registry, ["breast-cancer-mlp@1"], ServeConfig(), monitoring=monitoring)
    with TestClient(app) as client:
        wait_ready(client)
        answer = client.post("/v1/models/breast-cancer-mlp:predict", json={"instances": instances})
        assert answer.status_code == 200, answer.text
        request_id = answer.json()["request_id"]
        for row, label in enumerate(truth):
            reply = client.post("/v1/feedback", json={"request_id": request_id, "row": row, "label": label})
            assert reply.status_code == 200, reply.text
        state = client.app.state.serving  # type: ignore[attr-defined]
        state.monitor.check(state.watched())  # live quality from the sealed rows
        metrics = client.get("/metrics").text
    assert (
        'modelcycle_live_quality_samples{model="breast-cancer-mlp",version="1",window="1h"} 12.0' in metrics
    )
    on_disk = stored_text(store)
    sent = [json.dumps(instance["mean radius"]) for instance in instances]
    assert [text for text in [*sent, "malignant", "benign"] if text in on_disk] == []
    traffic = labelled_traffic(
        store, Predictor.load(registry.open("breast-cancer-mlp@1")), since=0.0, keys=ring("a")
    )
    assert traffic is not None  # what update fine-tunes on
    assert traffic.frame["mean radius"].tolist() == [instance["mean radius"] for instance in instances]
    registry.close()
    config = _config(tmp_path, store, encryption=True)
    report = cli(
        "monitor", "report", "breast-cancer-mlp", "--config", str(config), "--out", str(tmp_path / "r.html")
    )
    assert report.exit_code == 0, report.stderr
    unkeyed = cli("monitor", "report", "breast-cancer-mlp", "--config", str(_config(tmp_path, store, False)))
    assert unkeyed.exit_code == 13
    assert "encrypted with key 'a', and no keys were given" in unkeyed.stderr
    monkeypatch.setenv(ENVIRONMENT, f"b:{KEYS['b']}")  # the server refuses before it starts, in a line
    wrong_key = cli("serve", "breast-cancer-mlp", "--config", str(config))
    assert wrong_key.exit_code == 2
    assert "encrypted with key 'a', but the keys given are b" in wrong_key.stderr
    monkeypatch.delenv(ENVIRONMENT)
    no_key = cli("serve", "breast-cancer-mlp", "--config", str(config))
    assert no_key.exit_code == 2
    assert f"{ENVIRONMENT} is not set" in no_key.stderr
    assert "Traceback" not in unkeyed.stderr + wrong_key.stderr + no_key.stderr


def test_a_reseal_says_when_another_connection_kept_the_log_from_being_emptied(tmp_path: Path) -> None:
    """A reader in a transaction (a running server's writer or a monitoring round) pins the log, which may
    still hold the rows as they were: the reseal says so instead of claiming they are gone."""
    path = tmp_path / "monitor.db"
    write(path, None)
    with connect(path) as reader, open_database(path, ring("a")) as database:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM predictions").fetchone()  # holds a snapshot
        assert database.reseal() == Resealed(predictions=2, feedback=1, log_emptied=False)
        reader.execute("COMMIT")
        assert database.reseal() == Resealed(predictions=0, feedback=0, log_emptied=True)


def test_a_plain_answer_that_looks_sealed_reads_back_as_written(store_location: str) -> None:
    """Without encryption a generated answer is stored as it is; one a client steered to begin with the
    sealed form read as sealed, so every read of the model failed (503) and rotate-key stopped on it."""
    from modelcycle.monitor.predictions import PREDICTION_COLUMNS

    path = store_location
    looks_sealed, marked = "enc:v1:a:AAAAAAAAAAAAAAAA", "plain:as typed"
    rows = []
    for number, answer in enumerate((looks_sealed, marked)):
        values = {"request_id": f"r{number}", "row": 0, "model": "m", "version": 1, "protocol": "openai"}
        values |= {"created": 10.0 + number, "latency_ms": 1.0, "inputs": '{"prompt": "x"}'}
        values |= {"prediction": answer, "score": None, "probabilities": None}
        rows.append(tuple(values[column] for column in PREDICTION_COLUMNS))
    with open_database(path) as database:
        database.append(rows)
        assert database.add_feedback("r0", 0, looks_sealed, None, created=12.0) is None
        assert [row.prediction for row in database.recent_inputs("m", since=0.0, limit=5)] == [
            marked,
            looks_sealed,
        ]
        assert database.labelled("m", since=0.0)[0].label == looks_sealed
    with open_database(path, ring("a")) as database:  # and sealed later, they still read as written
        assert database.reseal() == Resealed(predictions=2, feedback=1)
        assert [row.prediction for row in database.recent_inputs("m", since=0.0, limit=5)] == [
            marked,
            looks_sealed,
        ]
