"""The evaluation report: the SegDiff paper's claims tested on our synthetic nuclei, and speed.

Run from the repository root::

    python -m benchmarks.report                 # everything (about an hour on 2 CPU cores)
    python -m benchmarks.report --parts 1,5     # a subset (numbers or names)
    python -m benchmarks.report --render-only   # rewrite docs/evaluation.md from the JSON
    python -m benchmarks.report --smoke         # tiny version of every part (seconds)

Parts (one module each, see :mod:`benchmarks.report.common` for the interface):

1. ``generations``: more generations raise IoU and improve calibration (paper Fig. 5, 6).
2. ``steps``: fewer diffusion steps cost little; DDPM vs DDIM; time vs steps (Fig. 9).
3. ``conditioning``: sum vs concat vs raw concat vs deeper injection (Table 4).
4. ``baselines``: SegDiff vs a plain U-Net of similar size and vs Otsu-in-box.
5. ``uncertainty``: AUROC of the uncertainty map for wrong pixels; error rate vs uncertainty.
6. ``speed``: seconds per prompt over generations x steps, first preview, memory.
7. ``sampler``: reference-style sampling vs our cached, batched sampler.
8. ``review``: per-object quality scores (issue 13): AUROC for the worst objects, the chosen
   score's calibration (written beside the model), re-threshold speed.

Raw results are JSON files (``docs/evaluation/<part>.json``), plots PNG files
(``docs/images/evaluation/``), and ``docs/evaluation.md`` is rendered from
``benchmarks/report/template.md``.
"""
from benchmarks.report import baselines, conditioning, generations, review, sampler, speed, steps, uncertainty

PARTS = (generations, steps, conditioning, baselines, uncertainty, speed, sampler, review)
"""The part modules in report order; part ``i`` is ``PARTS[i - 1]``."""

__all__ = ["PARTS"]
