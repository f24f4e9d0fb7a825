"""``headmap.audit`` and ``headmap.verify`` on tiny random models saved as folders (files to hash):
the record's numbers against direct computations, verify on an unchanged setup, and verify naming
the file when a weight file or the tokenizer changes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import TROPHY
from tiny_models import build

import headmap
from headmap.apps.audit import AuditRecord, audit, verify
from headmap.apps.audit.provenance import sha256_file
from headmap.attribution.explain import problem_for
from headmap.errors import HeadmapError
from headmap.result import LayerKey, Stack

CORPUS = ["The cat sat on the mat.", "Rain fell all night.", "She opened the old door slowly."]
FAST = {"n_steps": 4, "max_steps": 8, "corpus": CORPUS}


def save_folder(name, tokenizer, root):
    fast, _ = build(name, tokenizer)
    fast.model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def llama_folder(bert_tokenizer, tmp_path_factory):
    return save_folder("llama", bert_tokenizer, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def bert_folder(bert_tokenizer, tmp_path_factory):
    return save_folder("bert", bert_tokenizer, tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def record(llama_folder):
    return audit(str(llama_folder), TROPHY, **FAST)


@pytest.fixture()
def copied(llama_folder, tmp_path):
    """A private copy of the tiny llama and a record of it, for tests that damage files."""
    folder = shutil.copytree(llama_folder, tmp_path / "model")
    path = audit(str(folder), TROPHY, methods="attention,occlusion", corpus=CORPUS).save(tmp_path / "r.json")
    return folder, path


def test_record_numbers_equal_direct_computations(record, llama_folder):
    data = record.to_dict()
    loaded = headmap.load(str(llama_folder))
    ids = loaded.tokenizer(TROPHY)["input_ids"]
    with torch.inference_mode():
        # The LM head over the last position only, as the explained target computes it.
        logits = loaded.model(input_ids=torch.tensor([ids]), logits_to_keep=1).logits[0, -1].double()
        full = loaded.model(input_ids=torch.tensor([ids])).logits[0, -1].double()
    logprobs = torch.log_softmax(logits, -1)
    assert torch.allclose(logprobs, torch.log_softmax(full, -1), atol=1e-5)
    top = torch.topk(logprobs, 5)
    alts = data["decision"]["alternatives"]
    assert [a["token_id"] for a in alts] == top.indices.tolist()
    assert [a["logprob"] for a in alts] == top.values.tolist()
    target = data["decision"]["target"]
    assert target["token_id"] == alts[0]["token_id"]  # default target: the model's top token
    assert data["decision"]["logprob"] == logprobs[target["token_id"]].item()

    # Head ablation: the record's effects equal direct headmap.ablate calls through the same target.
    problem = problem_for(loaded, TROPHY)
    base = float(problem.target.evaluate(loaded.model, problem.inputs())[0])
    heads = data["heads"]
    for layer, row in enumerate(heads["effects"]):
        for head, effect in enumerate(row):
            with headmap.ablate(loaded, [(layer, head)]):
                assert effect == float(problem.target.evaluate(loaded.model, problem.inputs())[0]) - base
    pairs = [(LayerKey.parse(name), h) for name, h in heads["together"]["heads"]]
    with headmap.ablate(loaded, pairs):
        together = float(problem.target.evaluate(loaded.model, problem.inputs())[0])
    assert heads["together"]["effect"] == together - base
    assert len(pairs) == 3 and pairs[0] == (LayerKey.parse(heads["top"][0]["layer"]), heads["top"][0]["head"])
    assert pairs[0][0].stack is Stack.SELF
    flat = np.abs(np.array(heads["effects"])).ravel()
    assert abs(heads["top"][0]["effect"]) == flat.max()

    # Removing the top occlusion word: the same drop occlusion measured for that word.
    ex = record.explanation
    occlusion = ex.word_scores["occlusion"]
    first = data["causal"]["removal"]["occlusion"][0]
    best = int(np.nanargmax(occlusion))
    assert first["words"] == [ex.words.tokens[best]]
    assert first["drop"] == pytest.approx(occlusion[best], abs=1e-5)
    # Faithfulness: the numbers headmap.faithfulness gives for the same text, target and seed.
    direct = headmap.faithfulness(loaded, [TROPHY], ["attention", "occlusion"], target=target["token_id"])
    for row in direct.records:
        mine = data["faithfulness"][row["method"]]
        for key in ("aopc", "random_aopc", "comprehensiveness", "sufficiency", "loo_spearman", "deletion"):
            assert mine[key] == row[key], (row["method"], key)
    assert all(h["role"] for h in heads["top"]) and data["heads"]["roles"]["texts"] == len(CORPUS)


def test_summary_and_caveats_are_made_from_the_numbers(record):
    data = record.to_dict()
    token = data["decision"]["target"]["token"].strip()
    assert data["summary"][0].startswith(f"The model predicts {token!r} next with probability")
    assert f"{data['decision']['logprob']:.3g}" in data["summary"][0]
    assert any("Removing the 3 word(s)" in line for line in data["summary"])
    assert data["caveats"][0] == headmap.CAUSATION_WARNING
    assert any("layer 1" in c for c in data["caveats"])


def test_verify_passes_on_an_unchanged_setup(record, tmp_path, capsys):
    from headmap.cli import main

    path = record.save(tmp_path / "r.json")
    result = verify(path)
    assert result.ok and result.compared > 500 and result.exit_code == 0
    assert main(["verify", str(path)]) == 0
    assert "verified: all" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json"])
def test_verify_names_a_changed_file_and_its_expected_hash(copied, name, capsys):
    from headmap.cli import main

    folder, path = copied
    target = folder / name
    expected = sha256_file(target)
    data = bytearray(target.read_bytes())
    data[-10] ^= 0x01  # one bit of the last weights (or a space of the tokenizer's JSON)
    target.write_bytes(bytes(data))
    with pytest.raises(
        HeadmapError, match=f"model file .*{name} changed: expected sha256 {expected}, found "
    ):
        verify(path)
    assert main(["verify", str(path)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err and "Traceback" not in err


def test_verify_names_a_missing_file(copied, capsys):
    from headmap.cli import main

    folder, path = copied
    expected = sha256_file(folder / "tokenizer.json")
    (folder / "tokenizer.json").unlink()
    assert main(["verify", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"tokenizer.json is missing: expected sha256 {expected}") and "\n" not in err


def test_verify_names_each_number_that_differs_and_the_input_that_changed(copied, tmp_path, capsys):
    from headmap.cli import main

    _, path = copied
    data = json.loads(path.read_text(encoding="utf-8"))
    data["decision"]["output"] += 1e-9
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data), encoding="utf-8")
    result = verify(edited)
    assert not result.ok and [m.path for m in result.mismatches] == ["decision.output"]
    assert result.mismatches[0].rule == "bitwise" and result.changed_inputs == []
    assert main(["verify", str(edited)]) == 1
    out = capsys.readouterr().out
    assert "decision.output" in out and "not deterministic" in out

    del data["settings"]["seed"]
    edited.write_text(json.dumps(data), encoding="utf-8")
    assert main(["verify", str(edited)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("headmap: error: corrupt audit record") and "\n" not in err
    data["settings"]["seed"] = 0

    data["settings"]["text"] = TROPHY.replace("big", "small")
    edited.write_text(json.dumps(data), encoding="utf-8")
    result = verify(edited)
    assert not result.ok and any("text" in c for c in result.changed_inputs)


def test_encoder_records_the_cosine_and_verifies(bert_folder, tmp_path):
    record = audit(str(bert_folder), TROPHY, compare="A cup was too large for the box.", **FAST)
    data = record.to_dict()
    assert data["decision"]["target"]["kind"] == "cosine" and data["decision"]["alternatives"] == []
    assert data["summary"][0].startswith("The explained output is the cosine similarity")
    assert {f["path"].rsplit("/", 1)[-1] for f in data["provenance"]["files"]} >= {
        "model.safetensors",
        "tokenizer.json",
        "config.json",
    }
    assert verify(record.save(tmp_path / "bert.json")).ok


def test_pdf_has_every_page_and_the_summary_on_the_first(record, tmp_path):
    pypdf = pytest.importorskip("pypdf", reason="pypdf is in requirements.txt")
    path = record.save(tmp_path / "r.pdf")
    reader = pypdf.PdfReader(path)
    assert len(reader.pages) == 4
    first = " ".join(reader.pages[0].extract_text().split())
    assert "Summary" in first and "The model predicts" in first and "sha256" in first
    assert "Causal checks" in reader.pages[3].extract_text()


def test_html_is_self_contained_and_escapes_hostile_text(llama_folder, tmp_path):
    from browser_helpers import HOSTILE

    record = audit(str(llama_folder), " ".join(HOSTILE), methods="attention,occlusion", corpus=CORPUS)
    page = record.save(tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<img src=x" not in page and "<script" not in page and "<b>bold" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "http://" not in page and "https://" not in page


def test_a_record_loads_back_and_a_model_in_memory_cannot_be_verified(bert_tokenizer, record, tmp_path):
    again = AuditRecord.load(record.save(tmp_path / "r.json"))
    assert again.to_dict() == record.to_dict() and again.verifiable
    memory = audit(build("llama", bert_tokenizer)[0], TROPHY, methods="occlusion", corpus=CORPUS)
    assert memory.data["provenance"]["files"] == [] and not memory.verifiable
    with pytest.raises(HeadmapError, match="cannot be verified"):
        verify(memory)
    (tmp_path / "x.json").write_text('{"format": "something else"}', encoding="utf-8")
    with pytest.raises(HeadmapError, match="not a headmap audit record"):
        verify(tmp_path / "x.json")


def test_cli_writes_every_format(llama_folder, tmp_path, capsys):
    from headmap.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    outs = [tmp_path / f"r{ext}" for ext in (".json", ".html", ".pdf")]
    argv = [
        "audit",
        TROPHY,
        "-m",
        str(llama_folder),
        "--methods",
        "attention,occlusion",
        "--corpus",
        str(corpus),
    ]
    assert main([*argv, *(x for p in outs for x in ("-o", str(p)))]) == 0
    assert "The model predicts" in capsys.readouterr().out
    assert all(p.stat().st_size > 0 for p in outs)
    data = json.loads(outs[0].read_text(encoding="utf-8"))
    assert data["provenance"]["command"][:3] == ["headmap", "audit", TROPHY]
    assert data["settings"]["corpus"] == CORPUS
    assert main([*argv[:4], "-o", str(tmp_path / "r.txt")]) == 1
    assert "unknown output extension" in capsys.readouterr().err
