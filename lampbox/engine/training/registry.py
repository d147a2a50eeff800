"""Training objectives by name (lampbox.engine.registry): a job's lab picks its objective here,
and another package adds one through the `lampbox.objectives` entry point group. Importing
this module imports neither torch nor transformers: an objective's module loads when chosen.
"""

from __future__ import annotations

from typing import Any

from lampbox.engine.registry import Registry


def _objective_class(name: str, target: Any) -> Any:
    if not isinstance(target, type):
        raise TypeError(f"an objective is a class (a TrainingObjective), not {type(target).__name__}")
    return target


OBJECTIVES: Registry[Any] = Registry("objective", "objectives", resolve=_objective_class)


def register_objective(name: str, target: str | type, *, description: str = "", replace: bool = False) -> None:
    """Make an objective class available by name (a taken name is an error unless replace=True)."""
    OBJECTIVES.register(name, target, description=description, replace=replace)


def objective_class(name: str) -> Any:
    """The objective class registered as `name` (its module imported now)."""
    return OBJECTIVES.get(name)


def objective_names() -> list[str]:
    return OBJECTIVES.names()


for _name, _target, _description in (
    ("ipa", "lampbox.engine.training.sft:SFTObjective", "IPA fine-tuning: (prompt, gold) pairs, causal LM (also each OPPU user's adapter)"),
    ("fid", "lampbox.engine.training.fid:FiDObjective", "Fusion-in-Decoder: an encoder-decoder over fused passages"),
    ("ropg", "lampbox.engine.ropg.objective:RetrieverObjective", "ROPG: a bi-encoder retriever, KD or RL over candidate items"),
    ("rspg", "lampbox.engine.rspg.selector:SelectorObjective", "RSPG: a selector over the runs' outputs, KL towards their metrics"),
):
    register_objective(_name, _target, description=_description)
