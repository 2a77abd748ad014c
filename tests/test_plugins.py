"""The plugin registry every extension point uses (src/modelcycle/plugins.py): one ``@register`` adds an
entry, a second entry of one name is refused, and an unknown name fails with the known names and the
closest one."""

from __future__ import annotations

import pytest

from modelcycle.errors import ConfigError
from modelcycle.plugins import PluginRegistry, did_you_mean


def shapes() -> PluginRegistry[type]:
    registry: PluginRegistry[type] = PluginRegistry("shape")

    @registry.register("square")
    class Square:
        pass

    registry.register("circle")(float)
    return registry


def test_register_returns_the_entry_and_get_finds_it() -> None:
    registry = shapes()
    assert registry.get("circle") is float
    assert registry.get("square").__name__ == "Square"  # the decorator hands the class back unchanged
    assert registry.names() == ["circle", "square"]
    assert list(registry) == ["circle", "square"]
    assert "square" in registry
    assert "triangle" not in registry


def test_a_name_registered_twice_is_a_bug() -> None:
    registry = shapes()
    with pytest.raises(ValueError, match="shape 'circle' is registered twice"):
        registry.register("circle")(int)
    assert registry.get("circle") is float


def test_an_unknown_name_lists_the_known_and_suggests_the_closest() -> None:
    with pytest.raises(ConfigError) as caught:
        shapes().get("sqare", field="model.shape")
    assert caught.value.message == "model.shape: unknown shape 'sqare' (did you mean 'square'?)"
    assert caught.value.hint == "known: circle, square"
    with pytest.raises(ConfigError, match=r"^unknown shape 'hexagon' \(known"):
        shapes().get("hexagon")


def test_did_you_mean_stays_quiet_when_nothing_is_close() -> None:
    assert did_you_mean("circel", ["circle", "square"]) == " (did you mean 'circle'?)"
    assert did_you_mean("zzz", ["circle", "square"]) == ""
