"""The training monitor on real short fine-tuning runs: a plain torch loop and the Trainer."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import build

import headmap
from headmap.analysis.monitor import append_rows, read_monitor, record_heads
from headmap.analysis.partials import CORPUS_STATS
from headmap.cli import main
from headmap.errors import HeadmapError
from headmap.models import LoadedModel

PROBES = ["The trophy didn't fit in the suitcase.", "Rain fell on the quiet town all night."]
TRAIN = [
    "the cat sat on the mat and the dog sat on the rug",
    "a bird sang in the tree while the sun rose over the hill",
    "the river ran past the mill and the mill turned all day",
    "she read the letter twice and then put it in the drawer",
]


def tiny_gpt2(tokenizer):  # type: ignore[no-untyped-def]
    """GPT-2 keeps dropout (0.1) in training mode: the monitor must measure in eval mode."""
    fast, _ = build("gpt2", tokenizer)
    fast.model.train()
    return fast


def initial_report(loaded: LoadedModel) -> pd.DataFrame:
    frozen = copy.deepcopy(loaded.model).eval()
    return headmap.head_report(
        LoadedModel(frozen, loaded.tokenizer, loaded.name), PROBES, diversity=False
    ).table


def assert_step_equals_report(frame: pd.DataFrame, step: int, report: pd.DataFrame) -> None:
    rows = frame[frame["step"] == step].reset_index(drop=True)
    assert list(rows["layer"]) == list(report["layer"]) and list(rows["head"]) == list(report["head"])
    for name in CORPUS_STATS:
        np.testing.assert_array_equal(rows[name].to_numpy(), report[name].to_numpy(), err_msg=name)


def test_plain_training_loop(bert_tokenizer, tmp_path):
    loaded = tiny_gpt2(bert_tokenizer)
    model, path = loaded.model, tmp_path / "heads.csv"
    before = initial_report(loaded)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = bert_tokenizer(TRAIN, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    for step in range(31):
        if step % 10 == 0:
            record_heads(model, PROBES, step, path, tokenizer=bert_tokenizer, name="tiny-gpt2")
        if step == 30:
            break
        out = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["input_ids"]
        )
        out.loss.backward()
        if step == 15:  # between backward and the optimizer step: gradients and mode must survive
            grads = [p.grad.clone() for p in model.parameters()]
            record_heads(loaded, PROBES, 15)
            assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
            assert model.training and all(m.training for m in model.modules())
        optimizer.step()
        optimizer.zero_grad()
    frame = read_monitor(path)
    assert list(frame.columns) == ["step", "layer", "head", *CORPUS_STATS]
    assert sorted(frame["step"].unique()) == [0, 10, 20, 30]
    assert len(frame) == 4 * 2 * 4  # steps x layers x heads
    assert_step_equals_report(frame, 0, before)
    first, last = frame[frame.step == 0]["entropy"].to_numpy(), frame[frame.step == 30]["entropy"].to_numpy()
    assert np.abs(first - last).max() > 1e-3  # training moved the heads
    out = tmp_path / "entropy.png"
    assert main(["monitor-plot", str(path), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["monitor-plot", str(path), "--stat", "nonsense", "-o", str(out)]) == 1


def test_trainer_callback(bert_tokenizer, tmp_path):
    from transformers import Trainer, TrainingArguments

    loaded = tiny_gpt2(bert_tokenizer)
    before = initial_report(loaded)
    enc = bert_tokenizer(TRAIN, padding="max_length", max_length=24, truncation=True, return_tensors="pt")
    data = [
        {
            "input_ids": enc["input_ids"][i],
            "attention_mask": enc["attention_mask"][i],
            "labels": enc["input_ids"][i],
        }
        for i in range(len(TRAIN))
    ]
    path = tmp_path / "heads.parquet"
    monitor = headmap.HeadMonitor(bert_tokenizer, PROBES, path, every=4)
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=12,
        per_device_train_batch_size=2,
        learning_rate=3e-3,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    Trainer(model=loaded.model, args=args, train_dataset=data, callbacks=[monitor]).train()
    frame = read_monitor(path)
    assert sorted(frame["step"].unique()) == [0, 4, 8, 12]
    assert_step_equals_report(frame, 0, before)
    assert loaded.model.training


def test_monitor_errors(bert_tokenizer, tmp_path):
    loaded = tiny_gpt2(bert_tokenizer)
    with pytest.raises(HeadmapError, match=r"\.csv or \.parquet"):
        record_heads(loaded, PROBES, 0, tmp_path / "heads.json")
    with pytest.raises(HeadmapError, match="needs its tokenizer"):
        record_heads(loaded.model, PROBES, 0)
    with pytest.raises(HeadmapError, match="every must be at least 1"):
        headmap.HeadMonitor(bert_tokenizer, PROBES, tmp_path / "m.csv", every=0)
    first = record_heads(loaded, PROBES, 0, tmp_path / "m.csv", layers=[0])
    assert list(first["layer"].unique()) == ["layer.0"]
    with pytest.raises(HeadmapError, match="other columns"):
        append_rows(first.assign(extra=1.0), tmp_path / "m.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(HeadmapError, match="not a headmap monitor file"):
        read_monitor(tmp_path / "bad.csv")
    assert main(["monitor-plot", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "x.png")]) == 1
