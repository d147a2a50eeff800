"""The orchestration floor: the only code that uses both the engine and the store.

Run specs and keys (`specs`), the run pipeline (`pipeline`), cached ranking (`ranking`);
next, training jobs and the registry of trained artifacts. The front ends (CLI, bench, TUI)
call this floor; the engine below it never sees the store (docs/architecture.md).
"""
