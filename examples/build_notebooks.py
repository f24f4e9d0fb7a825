"""Write the example notebooks of examples/ from the cells below, without outputs.

The notebooks are generated so that they stay reviewable as code and identical from run to run
(fixed cell ids, no outputs, no execution counts). ``python examples/build_notebooks.py`` rewrites
them; ``--check`` only reports the ones that differ (exit 1), which tests/test_notebooks.py also
checks. Every notebook runs from examples/ (Jupyter's default for a notebook) or from the
repository root: it looks for corpora/ upwards from where it runs, and writes its files under
``out/`` there (or ``$HEADMAP_EXAMPLES_OUT``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
CAVEAT = (
    "> **Attention is correlation, not causation.** A map shows where a head looks, not why the model "
    "decides; what a head does depends on its layer. Where this notebook makes a claim, it sets a causal "
    "check (removing words, chunks or heads and measuring the output) beside the attention."
)
SETUP = """\
import os
import sys
import warnings
from pathlib import Path

import headmap

# Without ipywidgets, tqdm's notebook bars fall back to text with a warning that links to its install page.
warnings.filterwarnings("ignore", message="IProgress not found")
# corpora/ sits at the repository root: found from examples/ (Jupyter's default) or from the root itself.
ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "corpora").is_dir())
CORPORA = ROOT / "corpora"
OUT = Path(os.environ.get("HEADMAP_EXAMPLES_OUT", "out"))
OUT.mkdir(parents=True, exist_ok=True)
print("python:", sys.executable)
print("headmap:", headmap.__version__, "from", Path(headmap.__file__).parent)"""

Cell = tuple[str, str]  # ("md" or "code", source)

FIRST_MAP: list[Cell] = [
    (
        "md",
        "# Your first attention map\n\n"
        "Capture every head of the bundled sentence encoder `minilm` (all-MiniLM-L6-v2: 6 layers x 12 "
        "heads) on one sentence, explore it in the interactive view, look at it word by word, and save "
        "a static picture.\n\n" + CAVEAT,
    ),
    ("code", SETUP),
    (
        "code",
        'model = headmap.load("minilm")\n'
        'text = "The trophy didn\'t fit in the suitcase because it was too big."\n'
        "result = headmap.capture(model, text)  # every layer and head\n"
        "print(repr(result))",
    ),
    (
        "md",
        "A result displays itself as the **interactive view**: choose the layer and the head, switch "
        "between tokens and words, try the normalization presets, and hover a cell for its query token, "
        "key token and weight. It runs in the notebook's own page, with no server and no network.",
    ),
    ("code", "result"),
    (
        "md",
        "## Words instead of word pieces\n\n"
        "`to_words()` sums a word's keys and averages its queries. Layer 0, head 2 of MiniLM is a "
        "previous-token head: almost every word puts its attention on the word before it. "
        "`show(layer, head)` opens the view on that head.",
    ),
    ("code", "words = result.to_words()\nwords.show(layer=0, head=2)"),
    (
        "code",
        "import numpy as np\n\n"
        "weights = words.layer(0).head(2)  # numpy [query word, key word]\n"
        "labels = words.source.labels()\n"
        "for q in range(1, 6):\n"
        "    k = int(np.argmax(weights[q]))\n"
        '    print(f"{labels[q]!r:>10} -> {labels[k]!r:<10} {weights[q, k]:.3f}")',
    ),
    (
        "md",
        "## A static picture\n\n"
        "`render` writes PNG, SVG, PDF or a self-contained HTML page, picked by the extension. Here: "
        "special tokens hidden, each row's three largest weights kept.",
    ),
    (
        "code",
        "from IPython.display import Image\n\n"
        'path = words.mask(special=True).normalize("topk:3").render(OUT / "trophy.png", layer=3, head=5)\n'
        "Image(filename=str(path))",
    ),
]

HEADS: list[Cell] = [
    (
        "md",
        "# Every head over a corpus\n\n"
        "`head_report` measures every head of a model over many texts (entropy, distance, first-token "
        "share, previous-token share, ...) and names a role for each from fixed thresholds. Here: "
        "MiniLM over the first 48 sentences of `corpora/sentences.txt`.\n\n" + CAVEAT + "\n\n"
        "A role describes where a head looks on these texts, not what it is needed for; "
        "`importance=True` (or notebook 06) measures that.",
    ),
    ("code", SETUP),
    (
        "code",
        'model = headmap.load("minilm")\n'
        'report = headmap.head_report(model, CORPORA / "sentences.txt", max_texts=48)\n'
        'report.table[["layer", "head", "role", "entropy_norm", "first_share", "prev_share", "next_share"]].head(12)',
    ),
    ("code", 'report.table["role"].value_counts()'),
    ("md", "Each head's role, layers down the side:"),
    ("code", "fig = report.plot_roles()  # the notebook shows each new figure once, at the end of the cell"),
    (
        "md",
        "Pairs of heads that attend most alike (Jensen-Shannon distance between their rows, averaged "
        "over the texts): candidates to compare, not proof that either is redundant.",
    ),
    ("code", "report.near_duplicates(5)"),
    (
        "md",
        "## Look at the head with the largest previous-token share\n\n"
        "Capture its layer on one sentence of the corpus and open the interactive view on it.",
    ),
    (
        "code",
        'top = report.table.sort_values("prev_share").iloc[-1]\n'
        "print(f\"{top['layer']} head {top['head']}: previous-token share {top['prev_share']:.3f}, role {top['role']}\")\n"
        'sentence = (CORPORA / "sentences.txt").read_text(encoding="utf-8").splitlines()[3]\n'
        'sample = headmap.capture(model, sentence, layers=[top["layer"]])\n'
        'sample.show(layer=top["layer"], head=int(top["head"]))',
    ),
]

EXPLAIN: list[Cell] = [
    (
        "md",
        "# Attention beside causal evidence: `explain`\n\n"
        'Why does SmolLM2-135M (the bundled decoder) continue *"...because it was too"* with *" big"*? '
        "`explain` scores every token with attention, rollout, flow, gradient methods and occlusion (the "
        "causal check: remove a word, measure the log-probability of the target), and measures how far "
        "they agree.\n\n" + CAVEAT,
    ),
    ("code", SETUP),
    (
        "code",
        'model = headmap.load("smollm2")\n'
        'text = "The trophy didn\'t fit in the suitcase because it was too"\n'
        'ex = headmap.explain(model, text, target=" big")\n'
        "words = ex.to_words()\n"
        "words.table",
    ),
    (
        "md",
        "Each method against occlusion (Spearman and Kendall over the words; `_abs` compares magnitudes "
        "only). A method that agrees with occlusion here may still disagree on another text.",
    ),
    ("code", "words.causal_agreement()"),
    ("code", "words.agreement()"),
    ("md", "The explanation displays itself as a page: every method word by word, and the agreement."),
    ("code", "ex"),
    (
        "md",
        "## The attention it started from\n\n"
        "The `attention` score is the last row (the position that predicts the next token) of the last "
        "layer, averaged over its heads. The interactive view shows every head of that layer.",
    ),
    ("code", "last = headmap.capture(model, text, layers=[-1])\nlast"),
    (
        "md",
        "## Faithfulness over a few texts\n\n"
        "Deletion and insertion curves: remove (or keep) words in the order a method ranks them and "
        "watch the model's top-token log-probability. A faithful ranking makes it fall fast on deletion "
        "and rise fast on insertion (AOPC). Three texts and a coarse grid (every 20%) here, so the intervals are wide.",
    ),
    (
        "code",
        "import pandas as pd\n\n"
        "texts = [\n"
        "    text,\n"
        '    "The bakery on the corner opens at six, so the line forms before",\n'
        '    "She put the keys in her bag and walked to the",\n'
        "]\n"
        "faith = headmap.faithfulness(\n"
        "    model,\n"
        "    texts,\n"
        '    methods=("attention", "input_x_gradient", "occlusion"),\n'
        "    grid=(0, 20, 40, 60, 80, 100),\n"
        "    n_boot=200,\n"
        ")\n"
        "# each metric: the mean over the texts [its 95% bootstrap interval]\n"
        "pd.DataFrame(\n"
        "    {\n"
        '        m: {k: f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]" for k, v in metrics.items()}\n'
        "        for m, metrics in faith.summary().items()\n"
        "    }\n"
        ")",
    ),
    ("code", "fig = faith.figure()"),
]

RAG: list[Cell] = [
    (
        "md",
        "# Which retrieved chunk did the answer use? `rag`\n\n"
        "A question, five retrieved chunks (`corpora/rag/vault.jsonl`: one holds the vault's code, four "
        "are distractors about other codes) and an answer, on SmolLM2. `rag` measures the answer's "
        "attention on each chunk (raw, and calibrated against a neutral dummy in the same slot), then "
        "removes each chunk and measures how much the answer's log-probability drops: the causal "
        "check of the same claim.\n\n" + CAVEAT,
    ),
    ("code", SETUP),
    (
        "code",
        'model = headmap.load("smollm2")\n'
        'question = "What is the access code for the vault?"\n'
        'chunks = CORPORA / "rag" / "vault.jsonl"\n'
        'report = headmap.rag(model, question, chunks, answer="The access code for the vault is 7428.")\n'
        "report.table",
    ),
    ("code", "print(report.verdict)"),
    ("md", "The report displays itself as a page (chunks, attention, the causal check, the caveats):"),
    ("code", "report"),
    (
        "md",
        "## The answer's rows in the interactive view\n\n"
        "The head that puts the most attention on the vault chunk, captured on the exact prompt and "
        "answer ids the report used, keeping only the rows that predict the answer's tokens.",
    ),
    (
        "code",
        "import numpy as np\n\n"
        'slot = report.table.index[report.table["id"] == "vault"][0] - 1\n'
        "layer, head = np.unravel_index(np.argmax(report.head_attention[:, :, slot]), report.head_attention.shape[:2])\n"
        "share = report.head_attention[layer, head, slot]\n"
        'print(f"layer {layer}, head {head}: {share:.3f} of its attention on the vault chunk")\n'
        "encoded = headmap.encode_parts(model.tokenizer, [list(report.prompt_ids), list(report.answer_ids)])\n"
        "answer_rows = slice(len(report.prompt_ids) - 1, len(encoded.ids) - 1)\n"
        "rows = headmap.capture(model, encoded, layers=[int(layer)], rows=answer_rows)\n"
        "rows.show(head=int(head))",
    ),
]

BIAS: list[Cell] = [
    (
        "md",
        "# A counterfactual bias probe: `bias_probe`\n\n"
        "One hiring template (`corpora/bias/accountant.txt`), names typical of women and of men (24 "
        "each, picked by hand; a name does not determine anyone's gender), 8 one-to-one pairs here to "
        "stay quick. The compared output is SmolLM2's log-probability of *Yes*; the probe reports the "
        "paired gap, which heads attend to the name differently, and ablates the heads that attend "
        "most to the name to see whether the gap moves.\n\n" + CAVEAT + "\n\n"
        "**A probe on one template is not a bias audit**: the result can change with the wording, the "
        "names, the target and the model.",
    ),
    ("code", SETUP),
    (
        "code",
        'model = headmap.load("smollm2")\n'
        'template = (CORPORA / "bias" / "accountant.txt").read_text(encoding="utf-8").strip()\n'
        'groups = {"female": CORPORA / "bias" / "names_female.txt", "male": CORPORA / "bias" / "names_male.txt"}\n'
        "report = headmap.bias_probe(\n"
        "    model,\n"
        "    template,\n"
        "    groups,\n"
        '    "ten years of experience in accounting",\n'
        '    target="Yes",\n'
        "    chat=True,\n"
        "    pairs=8,\n"
        "    resamples=2000,\n"
        ")\n"
        "for line in report.findings:\n"
        '    print(line, end="\\n\\n")',
    ),
    ("code", "report.gap"),
    ("code", "report.pair_table"),
    (
        "md",
        "The report displays itself as a page (findings, statistics, maps of name attention, every pair):",
    ),
    ("code", "report"),
    (
        "md",
        "## One prompt in the interactive view\n\n"
        "The first ablated head (the one that attends most to the name), on the template filled with "
        "one name (plain text here, without the chat template the probe used).",
    ),
    (
        "code",
        "layer, head = report.ablated[0]\n"
        'prompt = template.format(name="Emily")\n'
        "one = headmap.capture(model, prompt, layers=[layer])\n"
        "one.to_words().show(layer=layer, head=head)",
    ),
]

PRUNE: list[Cell] = [
    (
        "md",
        "# Pruning heads: `prune`\n\n"
        "Which heads can MiniLM do without? `prune` ranks the heads three ways (importance, Michel et "
        "al. 2019; the broadest heads first; random), removes them step by step and measures held-out "
        "quality each time: the causal test that attention statistics alone cannot give. Then it cuts "
        "30% of the heads out of the weights for real. Small settings here (24 ranking texts, 20% "
        "steps, one random seed); the README shows the full curve.\n\n" + CAVEAT,
    ),
    ("code", SETUP),
    (
        "code",
        'model = headmap.load("minilm")\n'
        "report = headmap.prune(\n"
        "    model,\n"
        '    CORPORA / "sentences.txt",\n'
        "    max_texts=24,\n"
        "    curve=True,\n"
        "    step=0.2,\n"
        "    seeds=(0,),\n"
        "    amount=0.3,\n"
        '    out=OUT / "pruned-minilm",\n'
        "    latency_repeats=1,\n"
        ")\n"
        "report.table",
    ),
    ("code", "for line in report.summary:\n    print(line)"),
    ("code", "fig = report.figure()"),
    (
        "md",
        "## The cut model\n\n"
        "The saved folder loads like any model; each layer keeps its own number of heads (numbered "
        "0..n-1 as the cut model holds them; `headmap_pruning.json` maps them back).",
    ),
    (
        "code",
        'cut = headmap.load(str(OUT / "pruned-minilm"))\n'
        'small = headmap.capture(cut, "The trophy didn\'t fit in the suitcase because it was too big.")\n'
        "for layer in small.layers:\n"
        '    print(layer.key.name, "heads:", len(layer.heads))\n'
        "small",
    ),
]

IMAGES: list[Cell] = [
    (
        "md",
        "# Attention over an image: `digits-vit`\n\n"
        "headmap ships a small ViT trained on scikit-learn's 8x8 digits (3 layers x 4 heads, 2x2 patches: "
        "a 4x4 grid after CLS; 97.8% on 450 held-out digits). Any image model of the ViT family (ViT, DeiT, "
        "BEiT, DINOv2 with registers, CLIP and SigLIP towers) is captured the same way, from an image path "
        "or a PIL image, through the model's own image processor.\n\n" + CAVEAT,
    ),
    ("code", SETUP),
    (
        "code",
        "import numpy as np\n"
        "from PIL import Image\n"
        "from sklearn.datasets import load_digits\n\n"
        "digits = load_digits()\n"
        'folder = OUT / "digits"\n'
        "folder.mkdir(exist_ok=True)\n"
        "# Held-out digits (the model trained on the first 1,347), written as PNG files.\n"
        "for i in range(1700, 1720):\n"
        "    pixels = np.rint(digits.images[i] * (255 / 16)).astype(np.uint8)\n"
        '    Image.fromarray(pixels, "L").resize((64, 64), Image.NEAREST).save(folder / f"{i}-{digits.target[i]}.png")\n'
        'path = folder / "1700-5.png"\n'
        'model = headmap.load("digits-vit")\n'
        "result = headmap.capture(model, image=path)\n"
        "result.source.tokens[:6], result.source.patches.grid",
    ),
    (
        "md",
        "The result displays itself over the image: choose a layer and a head (or their mean, or the "
        "rollout over all layers); **hover a patch to look from it**, click to pin it and hover to read "
        "its weights; CLS, which has no place in the image, gets a bar beside it.",
    ),
    ("code", "result"),
    (
        "md",
        "The same pictures as files: one head from CLS, and Abnar & Zuidema's rollout (the head-averaged "
        "layers multiplied with the residual added), which they first applied to ViT.",
    ),
    (
        "code",
        'fig = result.figure(2, 1)\nresult.render(OUT / "rollout.png", head=None, rollout=True)',
    ),
    (
        "md",
        "## Every head over a folder of images\n\n"
        "`patch_stats` streams the maps: mean entropy, mean distance in the patch grid, and the weight "
        "on CLS, averaged over every row of every image. A head with a large CLS share is a sink, not "
        "necessarily a head that reads the digit: check with ablation before drawing a conclusion.",
    ),
    (
        "code",
        "stats = headmap.patch_stats(model, folder)\n"
        'stats.to_pandas().sort_values("cls_share", ascending=False).head(6)',
    ),
    ("code", 'fig = stats.figure(stat="grid_distance")'),
]

NOTEBOOKS: dict[str, list[Cell]] = {
    "01_first_map": FIRST_MAP,
    "02_heads_over_a_corpus": HEADS,
    "03_explain": EXPLAIN,
    "04_rag": RAG,
    "05_bias": BIAS,
    "06_prune": PRUNE,
    "07_images": IMAGES,
}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` (a key of :data:`NOTEBOOKS`), without outputs and with fixed cell ids."""
    cells = []
    for i, (kind, source) in enumerate(NOTEBOOKS[name]):
        make = new_markdown_cell if kind == "md" else new_code_cell
        cells.append(make(source, id=f"{name[:2]}-{i:02d}"))
    return new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
    )


def text(name: str) -> str:
    """The file content of notebook ``name``, as written."""
    return nbformat.writes(build(name)) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write every notebook (or, with ``--check``, name those that differ and return 1)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the files are up to date")
    args = parser.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path = HERE / f"{name}.ipynb"
        content = text(name)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != content:
                stale.append(path.name)
        else:
            path.write_text(content, encoding="utf-8")
    if stale:
        print("out of date (run python examples/build_notebooks.py):", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
