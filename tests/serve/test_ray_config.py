"""The Ray Serve application config that ``serve --ray`` submits, checked against Ray's own schema without
a cluster: scale (fixed or autoscaled), resources, the line-up as ``user_config``, and a spec that keeps
only the admin token's digest."""

from __future__ import annotations

import pytest

from modelcycle.config import MonitorConfig, ServeConfig
from modelcycle.serve.served import Lineup
from modelcycle.serve.transport import token_digest

pytest.importorskip("ray.serve", reason="the ray extra is not installed (pip install 'modelcycle[ray]')")

from ray.serve.schema import ServeDeploySchema

from modelcycle.serve.ray_config import IMPORT_PATH, ClusterSpec, application_config


def spec(**changes: object) -> ClusterSpec:
    return ClusterSpec(
        refs=["breast-cancer-mlp@1"],
        settings=ServeConfig(max_queue=100, max_batch_size=16).model_dump(mode="json"),
        monitor=MonitorConfig().model_dump(mode="json"),
        home="/shared/modelcycle",
        database_url="postgresql+psycopg://modelcycle@db/modelcycle",
        admin_digest=token_digest("secret"),
        **changes,
    )


def test_a_fixed_number_of_replicas_carries_the_lineup_as_user_config() -> None:
    lineups = {"breast-cancer-mlp": Lineup(primary=2, canary=3, canary_percent=10, previous=[1])}
    config = ServeDeploySchema.model_validate(
        {"applications": [application_config(spec(replicas=3), lineups)]}
    )
    (application,) = config.applications
    assert application.import_path == IMPORT_PATH
    assert application.runtime_env == {
        "env_vars": {"MODELCYCLE_DATABASE_URL": "postgresql+psycopg://modelcycle@db/modelcycle"}
    }
    (deployment,) = application.deployments
    assert deployment.num_replicas == 3
    assert deployment.max_ongoing_requests == 116  # the batcher's queue and a batch: 503s are ours, not Ray's
    assert deployment.ray_actor_options.num_cpus == 1.0
    assert (
        Lineup.model_validate(deployment.user_config["lineups"]["breast-cancer-mlp"])
        == lineups["breast-cancer-mlp"]
    )
    assert "secret" not in str(application.args)
    assert ClusterSpec.model_validate(application.args["spec"]).admin_digest == token_digest("secret")


def test_autoscaling_replaces_the_fixed_count() -> None:
    config = ServeDeploySchema.model_validate(
        {"applications": [application_config(spec(autoscale=(1, 4)), {"m": Lineup(primary=1)})]}
    )
    (deployment,) = config.applications[0].deployments
    assert deployment.autoscaling_config["min_replicas"] == 1
    assert deployment.autoscaling_config["max_replicas"] == 4
    assert deployment.autoscaling_config["target_ongoing_requests"] == 16  # a batch in flight per replica
    assert "num_replicas" not in deployment.model_fields_set
