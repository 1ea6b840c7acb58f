"""The neighbouring systems of the seeds, run as baselines on the study's folds (issue 18, notebook 08).

* :mod:`.tile_classifier`: seed 002, a LeNet-5 tile classifier whose sliding-window output is a nuclei mask.

Still to come: seed 003's U-Nets with counting and seed 004's Cyclic Learning from image-level labels.
"""
