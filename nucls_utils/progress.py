"""Progress bars: widgets in JupyterLab, text in the notebooks ``run_all.sh`` executes for the supplement.

``run_all.sh`` sets ``NUCLS_PROGRESS=text`` for its papermill runs: a widget bar keeps no state in an executed
notebook (the supplement would show its first frame, 0 %), while a text bar leaves its last line in the output.
Everywhere else this is ``tqdm.auto.tqdm`` (widgets in JupyterLab, text in a terminal).
"""

from __future__ import annotations

import os

if os.environ.get("NUCLS_PROGRESS", "") == "text":
    from tqdm.std import tqdm
else:
    from tqdm.auto import tqdm

__all__ = ["tqdm"]
