"""nucls_utils: the tested helper package of the reproducible NuCLS study.

Stages: :mod:`taxonomy` (classes and groups), :mod:`io` (data formats, folds), :mod:`config` (paths, profiles,
run manifest), :mod:`summary` (dataset summaries), :mod:`plotting` and :mod:`tables` (outputs).
"""

__version__ = "0.1.0"
