"""benchmarks/bench_oppu.py --only training: users repeated beyond the split for the flatness
check, and the training part run end to end on a tiny random Llama (the per-user figures come
from the users `lampbox train oppu` really trained)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from oppu_helpers import PROFILES, oppu_dataset

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _bench_module(name: str) -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))  # bench_oppu imports oppu_training as a script does
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_repeated_users_reach_the_count_with_new_ids(tmp_path: Path) -> None:
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    training = _bench_module("oppu_training")
    data = oppu_dataset(tmp_path / "commit_subject")
    made = training.repeated_users(data, "dev", 7, tmp_path / "repeated" / "commit_subject")
    questions = json.loads((made / "dev_questions.json").read_text())
    users = [q["user_id"] for q in questions]
    assert len(set(users)) == 9  # 3 users, 3 copies each: at least 7
    assert {"ann", "ann~2", "ann~3", "cyd~3"} <= set(users)
    assert len({q["id"] for q in questions}) == len(questions) == 9
    copy = next(q for q in questions if q["user_id"] == "bob~2")
    assert [item["id"] for item in copy["profile"]] == [item["id"] for item in PROFILES["bob"]]
    golds = json.loads((made / "dev_outputs.json").read_text())["golds"]
    assert [g["id"] for g in golds] == [q["id"] for q in questions]
    assert (made / "train_questions.json").read_text() == (data / "train_questions.json").read_text()
    with Store(tmp_path / "s.duckdb") as store:
        import_path(store, made, allow_empty_profiles=True)
        assert len(store.first_users("commit_subject", "user", "dev")) == 9


def test_training_part_times_each_trained_user(
    tmp_path: Path, tiny_lm: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path / "unused"))  # restored after run_training moves it
    monkeypatch.delenv("LAMPBOX_DB", raising=False)
    bench = _bench_module("bench_oppu")
    data = oppu_dataset(tmp_path / "commit_subject")
    figures = bench.main([
        "--only", "training", "--data", str(data), "--model", str(tiny_lm), "--users", "5", "--user-max-steps", "2",
        "--threads", "1", "--precision", "fp32", "--work", str(tmp_path / "work"), "--batch-size", "2",
    ])  # fmt: skip
    out = capsys.readouterr().out
    # users ann, bob, cyd, ann~2, bob~2: cyd has no profile items, the other four are trained
    assert figures["users"] == 4
    assert figures["median items"] == 2.5  # ann's 3 items, bob's 2, twice
    assert figures["median steps"] == 2
    assert figures["real tokens per step"] > 0
    assert figures["padded tokens per step"] >= figures["real tokens per step"]
    phases = figures["phases"]
    assert phases["steps"] > 0 and phases["save"] > 0 and phases["install + register"] > 0
    assert abs(phases["other"]) < 0.05 + 0.2 * figures["median s"]  # the named phases account for the wall time
    assert 0 < figures["adapter MB"] < 1  # a tiny model's adapter
    assert figures["rss last MB"] > 0
    from lampbox.model_folders import user_adapter_name

    adapters = {p.name for p in (tmp_path / "work" / "home" / "models").iterdir() if ".u." in p.name}
    assert adapters == {user_adapter_name("bench-5", user) for user in ("ann", "bob", "ann~2", "bob~2")}
    assert "lampbox train oppu" in out and "--users 5" in out and "load average" in out


def test_requantize_rewrites_the_quantized_tensors_and_keeps_the_rest(tmp_path: Path) -> None:
    """--requantize Q8_0: every quantized tensor of the packaged Q4_1 GGUF becomes Q8_0 holding the
    same values to within Q8_0's step, the F32 ones (norms) are copied bit for bit, every other
    metadata field is unchanged, and llama.cpp loads the file."""
    import gguf
    import numpy as np

    from lampbox.models import resolve_model

    bench = _bench_module("bench_oppu")
    source = resolve_model("smollm2-135m-instruct").path
    made = bench.requantized_gguf(source, "Q8_0", tmp_path / "base.gguf")
    assert made == tmp_path / "base.gguf" and not list(tmp_path.glob("*.partial"))
    old, new = gguf.GGUFReader(str(source)), gguf.GGUFReader(str(made))
    assert new.fields["general.file_type"].contents() == 7 and old.fields["general.file_type"].contents() == 3
    kept = {name for name in old.fields if not name.startswith("GGUF.") and name != "general.file_type"}
    assert kept <= set(new.fields)
    for name in ("general.architecture", "llama.block_count", "tokenizer.chat_template", "tokenizer.ggml.tokens"):
        assert new.fields[name].contents() == old.fields[name].contents()
    assert [t.name for t in new.tensors] == [t.name for t in old.tensors]
    f32 = gguf.GGMLQuantizationType.F32
    for before, after in zip(old.tensors, new.tensors, strict=True):
        assert list(after.shape) == list(before.shape)
        if before.tensor_type == f32:
            assert after.tensor_type == f32 and np.array_equal(np.array(after.data), np.array(before.data))
            continue
        assert after.tensor_type == gguf.GGMLQuantizationType.Q8_0
        if before.name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight"):
            was = gguf.quants.dequantize(np.array(before.data), before.tensor_type)
            now = gguf.quants.dequantize(np.array(after.data), after.tensor_type)
            step = np.abs(was).reshape(-1, 32).max(axis=1) / 127  # Q8_0: 32 values per block, one scale
            assert np.all(np.abs(was - now).reshape(-1, 32) <= step[:, None] * 0.6)  # half a step, the fp16 scale
    from llama_cpp import Llama

    from lampbox.engine.generation.llamacpp import load_cpu_backend

    load_cpu_backend()
    llama = Llama(model_path=str(made), n_ctx=64, verbose=False)
    assert llama.n_vocab() == len(old.fields["tokenizer.ggml.tokens"].contents())
    llama.close()
