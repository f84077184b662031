"""The strategy registry: strategy name → class, filled by @register (s2s_runtime.decoding.strategy) when the
decoding package is imported. It imports nothing, so GenerationOptions can validate against it."""

from __future__ import annotations

from typing import Any

STRATEGIES: dict[str, Any] = {}  # name → Strategy class (its `own_options` and `check` are read by GenerationOptions)
_listeners: list[Any] = []  # called after each registration (GenerationOptions drops its validated-options cache)


def add(cls: Any) -> None:
    """Register a strategy class under its `name`."""
    STRATEGIES[cls.name] = cls
    for listener in _listeners:
        listener()


def on_register(listener: Any) -> None:
    _listeners.append(listener)


def strategy_class(name: str) -> Any:
    """The class registered under a strategy name (KeyError if none)."""
    return STRATEGIES[name]


def owners(option: str) -> list[str]:
    """The strategies that name `option` among their own options."""
    return [name for name, cls in STRATEGIES.items() if option in cls.own_options]
