"""PGD-only re-check of the five RetinaMNIST study models retrained with the PGD-AT fix (#12).

The study's own evaluation (FGSM, PGD and AutoAttack over eight ε, Grad-CAM) did not fit the
session that retrained them; this runs its PGD-5 cells alone, on the same 200 stratified test
images, against the models that ``medrobust reproduce --task retinamnist --work
var/reproduce/cpu-strong`` stored. Prints (accuracy %, balanced accuracy %) per model and ε.

Run from the repository root: ``.venv/bin/python docs/results/reproduce-cpu-strong/pgd_recheck.py``
"""

import time

import numpy as np

from training.reproduce.config import load_study
from training.robustness.run import evaluate_stored
from training.robustness.spec import AttackSpec
from training.store import ModelStore

config = load_study("configs/reproduce-cpu.yaml")
task = next(t for t in config.tasks if t.name == "retinamnist")
spec = config.evaluation.evaluation_spec(0).model_copy(
    update={
        "attacks": [AttackSpec(name="pgd", params={"steps": 5, "random_start": True})],
        "epsilons": [0, 0.5, 1, 2, 4],
        "explain": None,
    }
)
store = ModelStore("var/reproduce/cpu-strong/models")
refs = [
    f"cpu-retinamnist-{v}-s0"
    for v in (
        "baseline",
        "attention-paper",
        "attention-datta",
        "baseline_pgd-at",
        "attention-paper_pgd-at",
    )
]
t = time.time()
out = evaluate_stored(store, refs, task.dataset, spec, split="test", limit=config.evaluation.limit)
labels = np.array(out.labels)
rows = {}
for c in out.adversarial:
    pred = np.array(c.predictions)
    acc = float(np.mean(pred == labels))
    bal = float(np.mean([np.mean(pred[labels == k] == k) for k in np.unique(labels)]))
    rows.setdefault(c.model, {})[c.epsilon] = (round(100 * acc, 1), round(100 * bal, 1))
for m, r in rows.items():
    print(m, r)
print(f"n={len(labels)} positives={int(labels.sum())} took {time.time() - t:.0f}s")
