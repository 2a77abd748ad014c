"""The gateway alone: which version answers (pinned, canary share, primary) and the shadow copy, with fake
versions and a scripted draw in place of the random split."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import numpy as np
import pytest

from modelcycle.errors import NotFoundError, OverloadedError
from modelcycle.serve.gateway import Gateway
from tests.serve.fakes import FakeVersion


def gateway(**line_up: Any) -> Gateway:
    return Gateway("m", line_up.pop("primary", FakeVersion(1)), **line_up)  # type: ignore[arg-type]


def test_without_a_canary_every_request_goes_to_the_primary() -> None:
    routed = gateway(draw=lambda: 0.0)
    assert all(routed.route() is routed.primary for _ in range(10))


def test_the_canary_takes_the_draws_under_its_percent() -> None:
    draws = iter([0.10, 0.30, 0.2499, 0.25, 0.99, 0.0])
    canary = FakeVersion(2)
    routed = gateway(canary=canary, canary_percent=25, draw=lambda: next(draws))
    answered = [routed.route().version for _ in range(6)]
    assert answered == [2, 1, 2, 1, 1, 2]


def test_a_seeded_split_sends_the_canary_its_share() -> None:
    source = random.Random(7)
    routed = gateway(canary=FakeVersion(2), canary_percent=10, draw=source.random)
    versions = [routed.route().version for _ in range(10_000)]
    same = random.Random(7)
    expected = sum(same.random() < 0.10 for _ in range(10_000))
    assert versions.count(2) == expected
    assert 900 <= expected <= 1100  # the share asked for, within sampling noise


def test_a_canary_at_zero_percent_gets_nothing() -> None:
    routed = gateway(canary=FakeVersion(2), canary_percent=0, draw=lambda: 0.0)
    assert routed.route().version == 1


def test_a_pinned_version_is_answered_by_whichever_role_holds_it() -> None:
    primary, canary, shadow = FakeVersion(1), FakeVersion(2), FakeVersion(3)
    routed = gateway(primary=primary, canary=canary, canary_percent=100, shadow=shadow)
    assert [routed.route(version) for version in (1, 2, 3)] == [primary, canary, shadow]
    assert routed.versions() == [primary, canary, shadow]
    with pytest.raises(NotFoundError, match="version 4 is not loaded") as raised:
        routed.route(4)
    assert raised.value.http_status == 404


def test_the_shadow_gets_a_copy_and_its_disagreements_are_counted() -> None:
    primary_answer = np.array([[0.9, 0.1], [0.2, 0.8]])

    async def scenario() -> Gateway:
        shadow = FakeVersion(2, outputs=np.array([[0.6, 0.4], [0.7, 0.3]]))  # row 2's argmax differs
        routed = gateway(shadow=shadow)
        routed.mirror(lambda loaded: {"x": np.zeros((2, 1))}, primary_answer, timeout=1)
        routed.mirror(lambda loaded: {"x": np.zeros((2, 1))}, shadow.outputs, timeout=1)
        await routed.settle()
        return routed

    routed = asyncio.run(scenario())
    assert (routed.shadow_requests, routed.shadow_disagreements) == (2, 1)


def test_a_failing_shadow_is_not_counted_and_no_shadow_gets_nothing() -> None:
    async def scenario() -> tuple[Gateway, Gateway]:
        busy = gateway(shadow=FakeVersion(2, error=OverloadedError("the queue is full")))
        alone = gateway()
        for routed in (busy, alone):
            routed.mirror(lambda loaded: {}, np.ones((1, 2)), timeout=1)
            await routed.settle()
        return busy, alone

    busy, alone = asyncio.run(scenario())
    assert busy.shadow is not None
    assert busy.shadow.asked == 1
    assert (busy.shadow_requests, busy.shadow_disagreements) == (0, 0)
    assert (alone.shadow_requests, alone.shadow_disagreements) == (0, 0)
