"""nucls_utils: the tested helper package of the reproducible NuCLS study.

Stages: :mod:`taxonomy` (classes and groups), :mod:`io` (data formats, folds), :mod:`config` (paths, profiles,
run manifest), :mod:`profiles` (every stage's settings per profile), :mod:`summary` (dataset summaries),
:mod:`evaluation` (every metric once), :mod:`plots` (every figure's builder), :mod:`figures` (the registry of
figures and tables, drawing and redrawing them, the supplement) and :mod:`tables` (outputs).
"""

__version__ = "0.1.0"
