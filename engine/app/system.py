"""The machine for the front-ends: devices and memory."""

from __future__ import annotations

from engine.app._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "describe_device": "engine.runtime.device",
    "list_devices": "engine.runtime.device",
    "select_device": "engine.runtime.device",
})
