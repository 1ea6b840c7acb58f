"""The neighbouring systems of the seeds, run as baselines on the study's folds (issue 18, notebook 08).

* :mod:`.tile_classifier`: seed 002, a LeNet-5 tile classifier whose sliding-window output is a nuclei mask.
* :mod:`.unet`: seed 003, U-Nets (the small net and the full Ronneberger depth) validated by counting nuclei.
* :mod:`.cyclic`: seed 004, Cyclic Learning's front end: a tile classifier trained on image-level labels, its LRP
  relevance maps and the pseudo masks cut from them.
* :mod:`.study`: notebook 08's driver: every system trained on notebook 05's folds, Cyclic Learning's back end (the
  project's Mask R-CNN) and cycles, scoring with :mod:`nucls_utils.evaluation`, the supervision ladder.
"""
