"""Everything notebooks 03 (agreement) and 04 (EM simulations) compute, as functions returning tidy DataFrames.

The building blocks live one level up (:mod:`nucls_utils.interrater.anchors` clustering into anchors,
:mod:`~nucls_utils.interrater.em` Dawid-Skene, :mod:`~nucls_utils.interrater.agreement` alpha/kappa,
:mod:`~nucls_utils.interrater.accuracy` participant and NP-label accuracy, :mod:`~nucls_utils.interrater.redundancy`
the NP-redundancy simulation); this package strings them together the way the paper's analyses do (notes sections 1
and 2a-2d), one module per topic, and every name is importable from the package itself:

* :mod:`.truth`: the multi-rater study read back, anchors, truth inference and the truth tables, class levels;
* :mod:`.accuracy`: participants' and the NP-label's accuracy (Figs 3a-c, 4e, S3, S7), ease of detection (Fig S8);
* :mod:`.agreement`: alpha, kappa, MDS, clicked suggestions (Figs 3d, 4b, 4d, 5a, 5c, 5d);
* :mod:`.boundaries`: algorithmic boundaries (Figs 4c, S5);
* :mod:`.clustering`: the clustering constraint and examples (Figs 2, 5b, S16);
* :mod:`.generator`: on the synthetic cohort, the inferred truth against the generator's;
* :mod:`.redundancy`: the NP-redundancy simulation (Fig 3e, notebook 04);
* :mod:`.paper_tables`: the "paper vs this run" tables.

Decisions the notes leave open, each documented where it is made:

* **Truth inference scope.** As in the reference code, Dawid-Skene EM runs per set and per group (Ps, NPs) only on
  anchors that at least two members of the group detected *in U-control* (``UNBIASED_n_matches_<who> >= 2``; the set's
  own count when a study has no U-control). ``undetected`` is a class, ``DidNotAnnotateFOV`` is missing, and anchors
  that no member of the group boxed in that set get a blank label.
* **P-truth.** An anchor is a real nucleus at class level L when its EM label of the Ps, grouped to L by summing the
  raw-class probabilities and re-taking the argmax (:func:`nucls_utils.interrater.em.group_posteriors`), is a class
  (not ``undetected``, not blank). Anchors whose P-truth is ``AMBIGUOUS`` at L are left out of the analyses at L
  (the reference's ``remap_classes_in_anchorsdf``).
* **Which anchors.** All set-level statistics use the primary clustering threshold, IOU 0.25 (the paper's choice);
  Fig 5 repeats the relevant ones at 0.5 and 0.75 and without the clustering constraint.
* **Each set its own truth.** Accuracy in a set (E, B-control, U-control) is measured against that set's P-truth,
  as the reference's per-set views do. On the synthetic cohort the generator's truth gives an unbiased second
  reference (:func:`truth_vs_generator`).

Truth tables (:class:`TruthTables`) are written to the stage folder of notebook 03 for notebooks 04 and 06:
``truth_<set>.csv`` (one row per anchor: geometry, detection counts, majority votes, EM probabilities and labels of
Ps and NPs at raw/main/super level, boundary-EM decision), ``labels_<set>.csv`` and ``clicks_<set>.csv``
(anchors x participants) and ``participants.csv``, with ``truth_tables.json`` describing them."""

from __future__ import annotations

from . import accuracy, agreement, boundaries, clustering, generator, paper_tables, redundancy, truth

#: The package's modules, in reading order; every public name of each is a name of the package.
_MODULES = (truth, accuracy, agreement, boundaries, clustering, generator, redundancy, paper_tables)
for _module in _MODULES:
    globals().update({_name: getattr(_module, _name) for _name in _module.__all__})
__all__ = [_name for _module in _MODULES for _name in _module.__all__]
del _module
