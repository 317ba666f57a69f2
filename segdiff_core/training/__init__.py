"""Training (paper Alg. 2) and evaluation of SegDiff models: ``segdiff-train``, ``segdiff-eval``."""
