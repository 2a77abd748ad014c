"""The served model's version transitions alone — promote, canary, shadow, rollback — with a fake loader and
a fake registry: what the gateway routes to afterwards, what is recorded, what is closed, and that a
version that cannot load changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from modelcycle.config import ServeConfig
from modelcycle.errors import ConfigError, NotFoundError
from modelcycle.serve.gateway import Gateway
from modelcycle.serve.served import Lineup, ServedModel
from modelcycle.serve.state import ServerState
from tests.serve.fakes import FakeLedger, FakeLoader, FakeVersion

ACTOR = "test"


def served(
    available: set[int] = frozenset({1, 2, 3}),
) -> tuple[ServedModel, FakeLoader, FakeLedger, list[int]]:
    loader, ledger, changes = FakeLoader(set(available)), FakeLedger(), []
    model = ServedModel(
        Gateway("m", FakeVersion(1)),  # type: ignore[arg-type]
        loader,  # type: ignore[arg-type]
        ledger,
        lambda: changes.append(1),
    )
    return model, loader, ledger, changes


def run(steps: Callable[[], Awaitable[Any]]) -> Any:
    async def scenario() -> Any:
        result = await steps()
        await asyncio.sleep(0)  # let retired versions close
        return result

    return asyncio.run(scenario())


def test_promote_swaps_the_primary_keeps_the_old_one_for_rollback_and_moves_production() -> None:
    model, loader, ledger, changes = served()
    outgoing = model.gateway.primary
    run(lambda: model.promote(2, actor=ACTOR))
    assert model.gateway.primary.version == 2
    assert model.gateway.primary is loader.loaded[0]
    assert model.previous == [1]
    assert outgoing.closed  # type: ignore[attr-defined]
    assert ledger.aliases == [("m@2", "production", ACTOR)]
    assert changes == [1]


def test_promoting_the_canary_ends_the_canary_without_loading_again() -> None:
    model, loader, _, _ = served()

    async def steps() -> None:
        await model.canary(2, 30, actor=ACTOR)
        await model.promote(2, actor=ACTOR)

    run(steps)
    assert len(loader.loaded) == 1
    assert model.gateway.primary is loader.loaded[0]
    assert (model.gateway.canary, model.gateway.canary_percent) == (None, 0.0)
    assert not loader.loaded[0].closed


def test_promoting_the_primary_changes_nothing_but_still_points_production_at_it() -> None:
    model, loader, ledger, _ = served()
    primary = model.gateway.primary
    run(lambda: model.promote(1, actor=ACTOR))
    assert model.gateway.primary is primary
    assert not primary.closed
    assert model.previous == []
    assert loader.loaded == []
    assert ledger.aliases == [("m@1", "production", ACTOR)]


def test_a_version_that_cannot_load_changes_nothing() -> None:
    model, _, ledger, changes = served(available=frozenset({1}))
    primary = model.gateway.primary
    for transition in (
        lambda: model.promote(9, actor=ACTOR),
        lambda: model.canary(9, 50, actor=ACTOR),
        lambda: model.shadow(9, actor=ACTOR),
    ):
        with pytest.raises(NotFoundError, match="version 9"):
            run(transition)
    assert model.gateway.versions() == [primary]
    assert not primary.closed
    assert (ledger.aliases, ledger.events, changes) == ([], [], [])


def test_a_canary_is_recorded_with_its_share_and_ends_at_zero() -> None:
    model, loader, ledger, changes = served()
    run(lambda: model.canary(2, 25, actor=ACTOR))
    assert model.gateway.canary is loader.loaded[0]
    assert model.gateway.canary_percent == 25
    run(lambda: model.canary(2, 0, actor=ACTOR))
    assert (model.gateway.canary, model.gateway.canary_percent) == (None, 0.0)
    assert loader.loaded[0].closed
    assert ledger.events == [("m", "canary", 2, {"percent": 25}), ("m", "canary", 2, {"percent": 0})]
    assert ledger.aliases == []
    assert len(changes) == 2


def test_the_primary_cannot_be_its_own_canary() -> None:
    model, _, ledger, _ = served()
    with pytest.raises(ConfigError, match="already the primary") as raised:
        run(lambda: model.canary(1, 10, actor=ACTOR))
    assert raised.value.http_status == 400
    assert model.gateway.canary is None
    assert ledger.events == []


def test_a_new_shadow_starts_its_counts_afresh_and_the_old_one_is_closed() -> None:
    model, loader, ledger, _ = served()
    run(lambda: model.shadow(2, actor=ACTOR))
    model.gateway.shadow_requests, model.gateway.shadow_disagreements = 10, 4
    run(lambda: model.shadow(3, actor=ACTOR))
    assert model.gateway.shadow is loader.loaded[1]
    assert (model.gateway.shadow_requests, model.gateway.shadow_disagreements) == (0, 0)
    assert loader.loaded[0].closed
    run(lambda: model.shadow(None, actor=ACTOR))
    assert model.gateway.shadow is None
    assert loader.loaded[1].closed
    assert [event[1:3] for event in ledger.events] == [("shadow", 2), ("shadow", 3), ("shadow", None)]


def test_a_version_kept_in_another_role_is_not_closed() -> None:
    model, loader, _, _ = served()

    async def steps() -> None:
        await model.shadow(2, actor=ACTOR)
        await model.canary(2, 50, actor=ACTOR)  # the shadow's object, not a second copy
        await model.canary(2, 0, actor=ACTOR)

    run(steps)
    assert len(loader.loaded) == 1
    assert model.gateway.shadow is loader.loaded[0]
    assert not loader.loaded[0].closed


def test_rollback_returns_to_the_previous_primary_ends_the_canary_and_moves_production() -> None:
    model, loader, ledger, _ = served()

    async def steps() -> None:
        await model.promote(2, actor=ACTOR)
        await model.canary(3, 20, actor=ACTOR)
        await model.rollback(actor=ACTOR)

    run(steps)
    assert model.gateway.primary.version == 1  # loaded again: the old primary was closed when replaced
    assert (model.gateway.canary, model.gateway.canary_percent) == (None, 0.0)
    assert model.previous == []
    assert all(version.closed for version in loader.loaded[:2])  # version 2 and the canary
    assert ledger.aliases == [("m@2", "production", ACTOR), ("m@1", "production", ACTOR)]
    assert ledger.events[-1] == ("m", "rollback", 1, {"from_version": 2})
    with pytest.raises(NotFoundError, match="no earlier primary"):
        run(lambda: model.rollback(actor=ACTOR))


def test_close_drains_every_version_in_the_line_up() -> None:
    model, _, _, _ = served()

    async def steps() -> None:
        await model.canary(2, 10, actor=ACTOR)
        await model.shadow(3, actor=ACTOR)
        await model.close()

    run(steps)
    assert all(version.closed for version in model.gateway.versions())  # type: ignore[attr-defined]


def test_concurrent_canaries_take_turns_so_the_replaced_one_is_closed() -> None:
    # each canary loads its version (an await); without turns both read "no canary" before either set one,
    # and the first one's version stayed loaded, never closed
    model, loader, _, _ = served()

    async def steps() -> None:
        await asyncio.gather(model.canary(2, 10, actor=ACTOR), model.canary(3, 20, actor=ACTOR))

    run(steps)
    assert [loaded.version for loaded in loader.loaded] == [2, 3]
    assert model.gateway.canary is loader.loaded[1]
    assert model.gateway.canary_percent == 20
    assert loader.loaded[0].closed  # type: ignore[attr-defined]


def test_adopting_a_lineup_made_elsewhere_loads_swaps_and_records_nothing() -> None:
    """What a cluster's replica does with the line-up another replica decided (Ray's ``user_config``)."""
    model, loader, ledger, changes = served()
    old_primary = model.gateway.primary
    lineup = Lineup(primary=2, canary=3, canary_percent=25, previous=[1])
    run(lambda: model.adopt(lineup))
    assert model.lineup() == lineup
    assert [loaded.version for loaded in loader.loaded] == [2, 3]
    assert old_primary.closed  # type: ignore[attr-defined]
    assert ledger.aliases == []
    assert ledger.events == []
    assert changes == [1]
    run(lambda: model.adopt(lineup))  # the replica that made the change gets it back: nothing moves
    assert len(loader.loaded) == 2
    assert not any(loaded.closed for loaded in loader.loaded)
    run(lambda: model.rollback(actor=ACTOR))  # the earlier primaries came with it
    assert model.lineup() == Lineup(primary=1)


def test_a_lineup_naming_a_version_that_cannot_load_changes_nothing_and_closes_what_it_loaded() -> None:
    model, loader, _, changes = served(available={1, 2})
    with pytest.raises(NotFoundError):
        run(lambda: model.adopt(Lineup(primary=2, shadow=3)))
    assert model.lineup() == Lineup(primary=1)
    assert [loaded.version for loaded in loader.loaded] == [2]
    assert loader.loaded[0].closed  # not left running beside the line-up
    assert changes == []


def _cluster_state(cluster: FakeCluster | None = None) -> tuple[ServerState, ServedModel]:
    model, _, _, _ = served()
    state = ServerState(registry=None, refs=[], settings=ServeConfig(), admin_digest=None)  # type: ignore[arg-type]
    state.models["m"] = model
    state.ready = True
    state.cluster = cluster
    return state, model


@dataclass
class FakeCluster:
    """One lock and one deployed line-up for every replica, as Ray's user_config is."""

    deployed: dict[str, Lineup]
    fails: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @contextlib.asynccontextmanager
    async def changing(self) -> AsyncIterator[dict[str, Lineup]]:
        async with self.lock:
            yield dict(self.deployed)

    async def publish(self, lineups: dict[str, Lineup]) -> None:
        await asyncio.sleep(0.01)  # other replicas' changes could slip in here, were it not for the lock
        if self.fails:
            raise RuntimeError("the Serve controller is gone")
        self.deployed |= lineups


def test_changes_on_two_replicas_at_once_apply_one_after_the_other_each_to_the_latest_lineup() -> None:
    """Replica A promotes while replica B starts a shadow: neither change is lost, and the registry
    records each once."""
    cluster = FakeCluster({"m": Lineup(primary=1)})
    a, _ = _cluster_state(cluster)
    b, _ = _cluster_state(cluster)

    async def both() -> list[bool | None]:
        return list(
            await asyncio.gather(
                a.change("m", lambda served: served.promote(2, actor=ACTOR)),
                b.change("m", lambda served: served.shadow(3, actor=ACTOR)),
            )
        )

    assert run(both) == [True, True]
    assert cluster.deployed["m"] == Lineup(primary=2, shadow=3, previous=[1])


def test_one_server_changes_alone_and_a_cluster_that_fails_to_take_a_change_is_reported_not_raised() -> None:
    alone, model = _cluster_state(None)
    assert run(lambda: alone.change("m", lambda served: served.promote(2, actor=ACTOR))) is None
    assert model.lineup().primary == 2
    cluster = FakeCluster({"m": Lineup(primary=1)}, fails=True)
    state, model = _cluster_state(cluster)
    assert run(lambda: state.change("m", lambda served: served.promote(3, actor=ACTOR))) is False
    assert model.lineup().primary == 3  # the change stands here (and in the registry); the answer says so


def test_a_replica_adopts_the_clusters_lineup_only_once_its_models_are_loaded() -> None:
    state, model = _cluster_state()
    state.ready = False

    async def steps() -> bool:
        adopting = asyncio.create_task(state.adopt({"m": Lineup(primary=2)}))
        await asyncio.sleep(0.01)
        waited = not adopting.done()
        state.ready = True
        state.loaded.set()
        await adopting
        return waited

    assert run(steps)
    assert model.lineup() == Lineup(primary=2)
