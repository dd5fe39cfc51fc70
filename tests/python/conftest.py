"""Makes the repository's ``python/`` importable (``from hetflow import _protocol``) when no
``hetflow`` is installed; without an ``__init__.py`` there, ``hetflow`` is a namespace package."""
import importlib.util
import sys
from pathlib import Path

PYTHON_DIR = Path(__file__).resolve().parents[2] / "python"

if importlib.util.find_spec("hetflow") is None:
    sys.path.insert(0, str(PYTHON_DIR))
