"""One content fingerprint for weights: a model folder retrained in place is seen as new."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lampbox.engine.fingerprint import file_sha256, folder_sha256, path_sha256


def test_fingerprints_follow_content_not_paths(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "weights.bin").write_bytes(b"\0" * 10)
    first = folder_sha256(folder)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert folder_sha256(copy) == first  # same content elsewhere: same fingerprint
    (folder / "weights.bin").write_bytes(b"\1" * 10)
    assert folder_sha256(folder) != first
    assert path_sha256(folder / "weights.bin") == file_sha256(folder / "weights.bin", cached=False)


@pytest.mark.slow
def test_a_dense_model_retrained_in_place_is_ranked_again(commits_store, tmp_path: Path) -> None:
    """Rankings and embeddings are keyed by the folder's content: overwrite the weights in the
    same folder and the next ranking recomputes (it was served stale when keyed by path)."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from lampbox.engine.retrieval import create_retriever
    from lampbox.engine.retrieval.dense import clear_memory_cache, packaged_model_path
    from lampbox.lab.ranking import rank_stored

    folder = tmp_path / "my-encoder"
    shutil.copytree(packaged_model_path(), folder)
    task = commits_store.task("commit_subject")
    questions = commits_store.questions("commit_subject", "user", "dev", limit=3)
    clear_memory_cache()
    before = create_retriever("dense", model=str(folder))
    first = rank_stored(commits_store, task, questions, before)
    served = rank_stored(commits_store, task, questions, create_retriever("dense", model=str(folder)))
    assert served == first and before.encoder().calls > 0

    weights = folder / "model.safetensors"
    tensors = load_file(str(weights))
    rng = np.random.default_rng(0)
    retrained = {name: (value + rng.normal(0, 0.05, value.shape)).astype(value.dtype) if value.dtype.kind == "f" else value for name, value in tensors.items()}
    save_file(retrained, str(weights))

    after = create_retriever("dense", model=str(folder))
    assert after.key != before.key
    again = rank_stored(commits_store, task, questions, after)
    assert after.encoder().texts_encoded > 0  # embeddings recomputed with the new weights
    assert [r.scores for r in again] != [r.scores for r in first]
