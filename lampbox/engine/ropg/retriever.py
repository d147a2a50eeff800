"""`ropg:NAME`: rank with a trained ROPG encoder (models/NAME/encoder) exactly as `dense` ranks
with any encoder; its key holds the encoder folder's content hash (through the dense model's
identity), so rankings and embeddings of an older checkpoint are never reused."""

from __future__ import annotations

from typing import Any, ClassVar

from lampbox.engine.retrieval.dense import DenseRetriever
from lampbox.errors import LampboxError

RETRIEVER_KIND = "retriever"
ENCODER_FOLDER = "encoder"  # a trained retriever's model folder keeps its encoder here


def trained_encoder(name: str) -> tuple[str, dict[str, Any]]:
    """The encoder folder of the trained ROPG retriever `name` and its record."""
    from lampbox.model_folders import is_model_folder, model_path, read_info

    folder = model_path(name)
    if not is_model_folder(folder):
        raise LampboxError(
            f"no trained retriever named {name!r} (train one with `lampbox train ropg --name {name}`)"
        )
    info = read_info(folder)
    if info.get("kind") != RETRIEVER_KIND:
        raise LampboxError(f"{name!r} is a trained {info.get('kind')} model, not a retriever")
    encoder = folder / ENCODER_FOLDER
    if not encoder.is_dir():
        raise LampboxError(
            f"{folder} has no {ENCODER_FOLDER}/ folder; retrain it or `lampbox models rm {name}`"
        )
    return str(encoder), info


class RopgRetriever(DenseRetriever):
    """A dense retriever over a trained ROPG encoder, with the settings it was trained with."""

    name: ClassVar[str] = "ropg"
    description: ClassVar[str] = (
        "a retriever trained from the model's feedback (lampbox train ropg)"
    )
    option_defaults: ClassVar[dict[str, Any]] = {**DenseRetriever.option_defaults, "trained": None}

    def __init__(self, **options: Any) -> None:
        trained = options.pop("trained", None)
        if not trained:
            raise LampboxError("retriever ropg needs a trained retriever's name: ropg:NAME")
        encoder, info = trained_encoder(str(trained))
        spec = info.get("spec") or {}
        options.setdefault("use_date", spec.get("use_date", True))
        options.setdefault("score", spec.get("score", "cos"))
        super().__init__(model=encoder, **options)
        self.trained = str(trained)
        self._options["trained"] = self.trained

    def key_values(self) -> dict[str, Any]:
        values = super().key_values()
        values["trained"] = self.trained
        return values


def trained_version(name: str) -> int | None:
    """When the trained retriever `name`'s record was written (ns; None: no such record). Training
    writes the record last, so NAME retrained (`--overwrite`) has another version."""
    from lampbox.model_folders import TRAINED_INFO, model_path

    try:
        return (model_path(name) / TRAINED_INFO).stat().st_mtime_ns
    except (OSError, LampboxError):
        return None


def trained_retriever_names() -> list[str]:
    """`ropg:NAME` for each trained retriever in the models folder."""
    from lampbox.model_folders import model_names, model_path, read_info

    names = []
    for name in model_names():
        try:
            if read_info(model_path(name)).get("kind") == RETRIEVER_KIND:
                names.append(f"ropg:{name}")
        except LampboxError:
            continue
    return names
