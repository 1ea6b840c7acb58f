"""DTALE: Decision Tree Approximation of Learned Embeddings (paper Fig. 7, S14, S15, Table S8; notes section 2h).

The package's modules: :mod:`.representations` (step 1), :mod:`.features` (step 2 and Table S8), :mod:`.tree`
(steps 3 and 4), :mod:`.rules` (decision paths, each class's rules, the paper-vs-run table, plausibility checks) and
the figures are in :mod:`nucls_utils.plots.dtale`; every name is importable from the package itself.

The four steps of the paper's Methods, one function each:

1. **Learned embeddings.** :func:`extract_representations` runs a NuCLS model over FOVs and keeps, per detection
   with objectness >= ``threshold``: box, objectness, predicted class, class probabilities, the classifier's input
   representation (``feat_0 ... feat_{D-1}``; with classification convolutions this is the paper's 1024-d
   "cbox" feature just before the logits) and the Hungarian-matched true class (IOU >= 0.5). :func:`embed` maps
   the representations to 2-D with hyperbolic UMAP.
2. **Interpretable features.** :func:`hematoxylin_channel` unmixes the FOV with Macenko-PCA stain estimation
   (HistomicsTK ``color_deconvolution_routine``); :func:`nuclei_features` calls HistomicsTK's
   ``compute_nuclei_features`` **once per FOV** on a label image of all the FOV's nuclei and keeps the 62
   features of Table S8 (:data:`TABLE_S8_FEATURES`).
3. **Regression tree.** :func:`fit_tree`: interpretable features -> 2-D embedding, depth <= 7, >= 250 nuclei
   per leaf.
4. **Node statistics.** :func:`node_statistics` scores every internal node as a one-vs-rest predictor of each
   class the *model* predicted; :func:`best_nodes` picks the representative (max F1) and the discriminative
   (max precision) node per class; :func:`decision_path` gives the rules root -> node, with size thresholds in
   microns.

Decisions (the paper and the reference code leave them open; notes 2h):

* **Hematoxylin intensity** = ``255 - Stains[..., 0]`` of HistomicsTK's deconvolution (Stains is an 8-bit
  "transmitted light" image of each stain, 255 = no stain), so higher = more hematoxylin, in [0, 255]. Integer
  valued, as ``compute_haralick_features`` casts to ``uint8``. If Macenko estimation fails or is not finite
  (e.g. a blank FOV), HistomicsTK's reference H&E matrix (:func:`nucls_utils.stains.stain_matrix`) is used.
* **One ``compute_nuclei_features`` call per FOV** (the reference called it per nucleus). The label image is the
  instance map of the FOV's predicted masks, painted in increasing score, so where masks overlap the more
  confident nucleus is on top and every nucleus is described by what remains visible of it. Nuclei with fewer
  than :data:`MIN_PIXELS` visible pixels get NaN features (and are dropped from the tree fit). Should the per-FOV
  call raise, that FOV falls back to one call per nucleus (a nucleus whose own call fails gets NaN).
  Per-nucleus calls on the nucleus's box plus a 16-px margin (``per_nucleus=True``) gave identical values (max
  difference < 1e-9 over the 726 annotated nuclei of the real sample); ``bench/bench_dtale_features.py``
  times both and reports the agreement.
* **Embedding coordinates for plots** are the Poincare-disk projection of umap-learn's hyperboloid output:
  umap returns ``(x, y)``; the hyperboloid point is ``(x, y, z)`` with ``z = sqrt(1 + x^2 + y^2)``, and the disk
  point is ``(x / (1 + z), y / (1 + z))``, inside the unit circle. The tree is fitted to whichever coordinates
  :func:`embed` returned (``projection='poincare'`` by default).
* **Physical units.** Interpretable features are computed in pixels at 0.2 microns per pixel; rules print size
  thresholds in microns / square microns (:data:`PHYSICAL_UNITS`). The paper's Fig. S14 threshold
  "MajorAxisLength < 36.2" is in pixels: 7.24 microns.
* **Ties** in :func:`best_nodes`: the first maximum in node order (sklearn's node ids are a pre-order, so the
  shallowest/leftmost). An optional ``min_size`` excludes nodes with fewer nuclei."""

from __future__ import annotations

from . import features, representations, rules, tree

#: The package's modules, in reading order; every public name of each is a name of the package.
_MODULES = (representations, features, tree, rules)
for _module in _MODULES:
    globals().update({_name: getattr(_module, _name) for _name in _module.__all__})
__all__ = [_name for _module in _MODULES for _name in _module.__all__]
del _module
