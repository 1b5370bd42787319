# Copyright (c) yolact_d2 contributors.
"""
The packages of yolact_d2 import one way (docs/ARCHITECTURE.md): each imports only packages
below it in LAYERS, at module level or inside functions alike (dev/import_map.py reads them).
"""

from common import load_script

# Bottom first.
LAYERS = [
    "_quiet",  # imported first by the package: third-party modules without their import warnings
    "utils",
    "layers",
    "config",
    "model_zoo",
    "modeling",
    "data",
    "checkpoint",
    "evaluation",
    "engine",
    "deploy",
    "scale",  # Ray Data over large collections: the demo's code (engine) and exports (deploy)
    "benchmark",
]


def _import_map():
    module = load_script("dev/import_map.py")
    return module.import_map(), module.line_counts()


def test_every_package_has_a_layer():
    _, counts = _import_map()
    assert set(counts) - {"__init__"} == set(LAYERS)


def test_imports_point_down():
    edges, _ = _import_map()
    upward = {
        f"{source} -> {target}": places
        for source, targets in edges.items()
        if source != "__init__"
        for target, places in targets.items()
        if LAYERS.index(target) > LAYERS.index(source)
    }
    assert upward == {}
    # The map sees imports (so the check can fail): what the model is built from, for one.
    assert {"layers", "utils"} <= set(edges["modeling"])
