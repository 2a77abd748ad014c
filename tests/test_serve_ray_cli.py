"""``modelcycle serve --ray`` refuses options that cannot work before it opens anything: one line naming the
flag, exit 2, no traceback, and no minutes-long wait on an address where no Ray head answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import free_port


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--replicas", "2"], "--replicas needs --ray ADDRESS"),
        (["--autoscale", "1:3"], "--autoscale needs --ray ADDRESS"),
        (["--ray", "nonsense"], "'nonsense' is not HOST:PORT of a Ray head node"),
        (["--ray", "127.0.0.1:6379", "--replicas", "2", "--autoscale", "1:2"], "not both"),
        (["--ray", "127.0.0.1:6379", "--autoscale", "3:1"], "'3:1' is not MIN:MAX replicas"),
        (["--ray", "127.0.0.1:6379", "--workers", "2"], "with --ray give --replicas"),
        (["--ray", "127.0.0.1:{closed}"], "nothing answers at '127.0.0.1:{closed}'"),
    ],
)
def test_cluster_options_that_cannot_work_fail_at_once_naming_the_flag(
    cli: Callable[..., Any], arguments: list[str], message: str
) -> None:
    closed = free_port()
    result = cli("serve", "any-model", *[argument.format(closed=closed) for argument in arguments])
    assert result.exit_code == 2
    assert message.format(closed=closed) in result.stderr
    assert "Traceback" not in result.stderr
