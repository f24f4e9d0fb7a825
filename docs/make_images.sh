#!/usr/bin/env bash
# Re-render the gallery images in docs/images with the headmap CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
HM=.venv/bin/headmap
T="The trophy didn't fit in the suitcase because it was too big."
O=docs/images
$HM render "$T" -m minilm --layer 3 --head 5 --words -o $O/minilm-layer3-head5-words.png
$HM render "$T" -m minilm --layer 3 --head all --words --mask-special -o $O/minilm-layer3-all-heads.png
$HM render "$T" -m smollm2 --layer 12 --head all -o $O/smollm2-layer12-all-heads.png
$HM render "$T" -m smollm2 --layer 12 --head 4 --norm topk:3 -o $O/smollm2-layer12-head4-top3.png
.venv/bin/python - <<'PY'
import headmap
from headmap.render.files import save_figure
from headmap.render.static import plot_layer_profile
T = "The trophy didn't fit in the suitcase because it was too big."
result = headmap.capture(headmap.load("smollm2"), T)
save_figure(plot_layer_profile(result, kind="heatmap"), "docs/images/smollm2-layer-profile.png")
PY
# headmap explain: attention beside IG and occlusion, one sentence per bundled model
$HM explain "The trophy didn't fit in the suitcase because it was too" -m smollm2 --target " big" -o $O/explain-smollm2.png
$HM explain "$T" -m minilm --compare "A bag that is too small." -o $O/explain-minilm.png
$HM rag --question "What is the access code for the vault?" --chunks corpora/rag/vault.jsonl -m smollm2 \
    --quiet -o docs/images/rag-vault.png
# Corpus report of SmolLM2 over the shipped sentences (the README's head-report pictures).
$HM heads corpora/sentences.txt -m smollm2 --importance --out headmap-heads-smollm2 -q
for f in roles profile mds importance; do cp headmap-heads-smollm2/$f.png $O/smollm2-heads-$f.png; done
cp headmap-heads-smollm2/stat_first_share.png $O/smollm2-heads-first-share.png
# headmap bias: the worked example (corpora/bias), SmolLM2 through its chat template, MiniLM by cosine.
B="--template corpora/bias/accountant.txt --group female=corpora/bias/names_female.txt --group male=corpora/bias/names_male.txt --evidence"
$HM bias $B "ten years of experience in accounting" --target "Yes" --chat --pairs 24 -m smollm2 --quiet \
    -o $O/bias-smollm2.png
$HM bias $B "ten years of experience in accounting" --compare "A highly qualified accountant." --pairs 24 -m minilm \
    --quiet -o $O/bias-minilm.png
# headmap prune: quality vs heads removed (importance / entropy / random orders) and a 30% cut, per bundled model
$HM prune -m minilm --texts corpora/sentences.txt --curve --amount 0.3 -q -o $O/prune-minilm.png
$HM prune -m smollm2 --texts corpora/sentences.txt --max-texts 96 --curve --amount 0.3 -q -o $O/prune-smollm2.png
# headmap audit: the first page of a record of one MiniLM decision (the README's audit picture)
$HM audit "$T" -m minilm --compare "A bag that is too small." -o $O/audit-minilm.png
# Images: the digits ViT headmap trains and ships (scripts/train_digits_vit.py), on a held-out 5 of sklearn's digits.
.venv/bin/python - <<'PY'
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
pixels = np.rint(load_digits().images[1700] * (255 / 16)).astype(np.uint8)
Image.fromarray(pixels, "L").resize((64, 64), Image.NEAREST).save("docs/images/digit-5.png")
PY
$HM render -m digits-vit --image $O/digit-5.png --layer 2 --head all -o $O/digits-vit-layer2-all-heads.png
$HM render -m digits-vit --image $O/digit-5.png --layer 2 --head 1 -o $O/digits-vit-layer2-head1.png
$HM render -m digits-vit --image $O/digit-5.png --rollout -o $O/digits-vit-rollout.png
