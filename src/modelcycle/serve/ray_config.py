"""What ``modelcycle serve --ray`` submits to a Ray cluster, as data: the spec every replica starts with and
our application in the declarative form ``serve deploy`` takes (an import path, its arguments, and the
deployment with its scale and its ``user_config``, the line-up of every served model). Only this form lets
Ray change the ``user_config`` of running replicas in place: an application built in Python gets a new code
version, and new replicas, each time it is run. Plain data, no Ray import: the CLI checks it before it joins
a cluster, and tests check it against Ray's schema without one."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from modelcycle.config import ServeConfig
from modelcycle.serve.served import Lineup

APPLICATION = "modelcycle"
DEPLOYMENT = "ModelServer"
IMPORT_PATH = "modelcycle.serve.ray_app:application"
TARGETS_FOLDER = ("ray", "targets")  # under the registry home: the replicas' Prometheus discovery files


class ClusterSpec(BaseModel):
    """What every replica is started with (the application's ``args``, JSON): the references, the serve and
    monitor sections, where the registry lives, how many replicas; the admin token only as its digest."""

    refs: list[str]
    settings: dict[str, Any]
    monitor: dict[str, Any]
    home: str  # the registry home (artifacts): a folder every node reads at the same path
    database_url: str | None = None  # the registry database; None: SQLite under ``home``
    admin_digest: str | None = None
    replicas: int = Field(default=1, ge=1)
    autoscale: tuple[int, int] | None = None  # (min, max) replicas, scaled by Ray on ongoing requests
    cpus_per_replica: float = Field(default=1.0, gt=0)

    def deployment(self, lineups: dict[str, Lineup]) -> dict[str, Any]:
        """The deployment's part of the application config: scale, resources, and the line-up as its
        ``user_config``."""
        settings = ServeConfig.model_validate(self.settings)
        scale: dict[str, Any] = {"num_replicas": self.replicas}
        if self.autoscale is not None:
            low, high = self.autoscale
            scale = {
                "autoscaling_config": {
                    "min_replicas": low,
                    "max_replicas": high,
                    "initial_replicas": low,
                    "target_ongoing_requests": settings.max_batch_size,
                }
            }
        return {
            "name": DEPLOYMENT,
            **scale,
            # the batcher needs many requests in flight to fill batches; past its queue bound it answers 503
            "max_ongoing_requests": settings.max_queue + settings.max_batch_size,
            "ray_actor_options": {"num_cpus": self.cpus_per_replica},
            "user_config": {"lineups": {name: lineup.model_dump() for name, lineup in lineups.items()}},
        }


def application_config(spec: ClusterSpec, lineups: dict[str, Lineup]) -> dict[str, Any]:
    """Our application as a Ray Serve application config."""
    env = {"MODELCYCLE_DATABASE_URL": spec.database_url} if spec.database_url else {}
    return {
        "name": APPLICATION,
        "route_prefix": "/",
        "import_path": IMPORT_PATH,
        "args": {"spec": spec.model_dump(mode="json")},
        "runtime_env": {"env_vars": env},
        "deployments": [spec.deployment(lineups)],
    }


def deployed_lineups(config: dict[str, Any]) -> dict[str, Lineup]:
    """The line-ups in an application config as deployed (what Ray hands new replicas)."""
    deployment = next(entry for entry in config["deployments"] if entry["name"] == DEPLOYMENT)
    lineups = (deployment.get("user_config") or {}).get("lineups", {})
    return {name: Lineup.model_validate(value) for name, value in lineups.items()}
