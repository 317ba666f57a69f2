"""Evaluation of box-prompted segmenters with the SegDiff paper's protocols.

* :mod:`segdiff_core.evaluation.runner`: prompt sets, protocols (tight, expansion, windows),
  the method-agnostic runner and the result table/JSON.
* :mod:`segdiff_core.evaluation.baselines`: the Otsu-in-box baseline.
* :mod:`segdiff_core.evaluation.cli`: the ``segdiff-eval`` command.
"""
from segdiff_core.evaluation.baselines import BASELINES, otsu_foreground, otsu_in_box, otsu_method
from segdiff_core.evaluation.runner import (
    DEFAULT_EVAL_SEED,
    PROTOCOLS,
    EvalItem,
    EvalProtocol,
    EvaluationError,
    Method,
    MethodResult,
    Prediction,
    PreparedItem,
    dataset_items,
    evaluate,
    format_table,
    crop_items,
    prepare_items,
    run_method,
    segdiff_method,
    synthetic_items,
)

__all__ = [
    "BASELINES",
    "DEFAULT_EVAL_SEED",
    "PROTOCOLS",
    "EvalItem",
    "EvalProtocol",
    "EvaluationError",
    "Method",
    "MethodResult",
    "Prediction",
    "PreparedItem",
    "dataset_items",
    "evaluate",
    "format_table",
    "otsu_foreground",
    "otsu_in_box",
    "otsu_method",
    "crop_items",
    "prepare_items",
    "run_method",
    "segdiff_method",
    "synthetic_items",
]
