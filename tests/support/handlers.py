"""Load the real Lambda handler modules (functions/<name>/app.py) under unique names."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

FUNCTIONS_DIR = Path(__file__).resolve().parents[2] / "functions"


def load_handler(name: str, *, fresh: bool = False) -> ModuleType:
    """Import ``functions/<name>/app.py`` as module ``functions_<name>_app``."""
    module_name = f"functions_{name}_app"
    if not fresh and module_name in sys.modules:
        return sys.modules[module_name]
    path = FUNCTIONS_DIR / name / "app.py"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
