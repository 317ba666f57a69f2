"""Headless prediction: ``segdiff-predict`` over files, folders and images larger than memory.

Modules: :mod:`.io` (lazy reading, atomic writing), :mod:`.prompts` (Shapes CSV and label-image
prompts), :mod:`.tiles` (one tile = one task), :mod:`.run` (one image), :mod:`.distributed`
(dask), :mod:`.cli` (the command).
"""
