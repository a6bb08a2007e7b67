"""The in-memory store now lives in `commy.store.memory` (the simulator uses it too); this
re-export keeps the hub tests' imports working."""

from commy.store.memory import MemAlert, MemEntry, MemHandle, MemoryStore

__all__ = ["MemAlert", "MemEntry", "MemHandle", "MemoryStore"]
