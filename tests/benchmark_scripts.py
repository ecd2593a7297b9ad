"""Import a script under benchmarks/ (not a package) as a module, for the tests that check it."""

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(script: str, name: str | None = None):
    """benchmarks/<script>.py as the module `name` (default `<script>_benchmark`), registered
    in sys.modules so that scripts importing each other by name (torch_unet) find it."""
    name = name or f"{script}_benchmark"
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
