"""Make ``import trainer`` find the package, not this folder of the same name.

pytest's default "prepend" import mode puts ``tests/`` on ``sys.path`` (it holds a
conftest.py and no ``__init__.py``), and the editable install resolves packages through
a finder that runs after the path scan; so ``tests/trainer`` would be imported as an
empty namespace package called ``trainer``. A regular package anywhere on ``sys.path``
wins over a namespace portion, so putting the repository root on the path is enough.
The lasting fix is ``pythonpath = ["."]`` in pytest's configuration (pyproject.toml).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
_loaded = sys.modules.get("trainer")
if _loaded is not None and getattr(_loaded, "__file__", None) is None:
    # An earlier import already bound the namespace package: forget it and its children.
    for name in [n for n in sys.modules if n == "trainer" or n.startswith("trainer.")]:
        del sys.modules[name]
