"""Corpus reports on Ray Data: the same table as in process, and a worker's death loses nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tiny_models import build

from headmap.analysis.ray_engine import FAULT_ONCE, RayEngine
from headmap.analysis.report import head_report
from headmap.models import load

pytest.importorskip("ray.data")

TEXTS = [
    "The trophy didn't fit in the suitcase because it was too big.",
    "Hi there.",
    "Attention is correlation, not causation.",
    "A fourth text, of yet another length, so that the groups differ.",
    "Short one.",
    "The museum will close two of its galleries for renovation next spring.",
] * 2


@pytest.fixture(scope="module")
def saved_llama(bert_tokenizer, tmp_path_factory):
    """A tiny model saved as a folder: Ray workers load models by name or folder."""
    fast, _ = build("llama", bert_tokenizer)
    folder = tmp_path_factory.mktemp("tiny-llama")
    fast.model.save_pretrained(folder)
    bert_tokenizer.save_pretrained(folder)
    return load(str(folder))


@pytest.fixture(scope="module")
def local_report(saved_llama):
    return head_report(saved_llama, TEXTS, batch_size=2)


def _same(a, b) -> None:
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=False, atol=1e-6, rtol=0)
    np.testing.assert_allclose(a.combined.distances, b.combined.distances, atol=1e-6, rtol=0)
    assert a.n_texts == b.n_texts == len(TEXTS)


@pytest.mark.slow
def test_ray_report_equals_the_in_process_one(saved_llama, local_report, tmp_path):
    report = head_report(saved_llama, TEXTS, batch_size=2, engine=RayEngine(workers=2), out=tmp_path / "rep")
    _same(report, local_report)
    assert len(list((tmp_path / "rep" / "partials").iterdir())) == len(TEXTS) // 2  # every group kept once


@pytest.mark.slow
def test_a_worker_that_dies_is_retried_and_nothing_is_lost(saved_llama, local_report, tmp_path):
    marker = tmp_path / "died"
    engine = RayEngine(workers=2, runtime_env={"env_vars": {FAULT_ONCE: str(marker)}})
    report = head_report(saved_llama, TEXTS, batch_size=2, engine=engine)
    assert marker.exists()  # a worker really died mid-job
    _same(report, local_report)  # ... and its texts were counted once, not lost, not twice


def test_models_that_workers_cannot_load_are_refused(bert_tokenizer):
    from headmap.errors import HeadmapError

    fast, _ = build("llama", bert_tokenizer)  # built in memory: no name or folder to load from
    with pytest.raises(HeadmapError, match="save_pretrained"):
        head_report(fast, TEXTS[:2], engine=RayEngine(workers=1))
