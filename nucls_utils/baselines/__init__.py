"""The neighbouring systems of the seeds, run as baselines on the study's folds (issue 18, notebook 08).

* :mod:`.tile_classifier`: seed 002, a LeNet-5 tile classifier whose sliding-window output is a nuclei mask.
* :mod:`.unet`: seed 003, U-Nets (the small net and the full Ronneberger depth) validated by counting nuclei.

Still to come: seed 004's Cyclic Learning from image-level labels, notebook 08 and the supervision ladder.
"""
