#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
"""
Which package of yolact_d2 imports which (module-level and function-level imports alike), and
the lines of code of each package: ``python dev/import_map.py``. tests/test_layers.py checks the
same map against the layering ARCHITECTURE.md describes.
"""

import ast
import os
import sys
from collections import defaultdict

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "yolact_d2")


def package_of(path: str, root: str = ROOT) -> str:
    """yolact_d2/<package>/... -> package; top-level modules (config.py...) -> their name."""
    rel = os.path.relpath(path, root).split(os.sep)
    return rel[0] if len(rel) > 1 else os.path.splitext(rel[0])[0]


def import_map(root: str = ROOT):
    """{package: {imported yolact_d2 package: [importing file:line, ...]}}"""
    edges = defaultdict(lambda: defaultdict(list))
    for directory, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            source = package_of(path, root)
            module_parts = os.path.relpath(path, root)[:-3].split(os.sep)
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                targets = []
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names if a.name.startswith("yolact_d2.")]
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = module_parts[: len(module_parts) - node.level]
                        module = ".".join(
                            ["yolact_d2"] + base + ([node.module] if node.module else [])
                        )
                    else:
                        module = node.module or ""
                    if module.startswith("yolact_d2.") or module == "yolact_d2":
                        targets = [module]
                for target in targets:
                    parts = target.split(".")
                    if len(parts) < 2:
                        continue
                    imported = parts[1]
                    if imported != source:
                        edges[source][imported].append(
                            f"{os.path.relpath(path, root)}:{node.lineno}"
                        )
    return edges


def line_counts(root: str = ROOT):
    counts = defaultdict(int)
    for directory, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                with open(path) as f:
                    counts[package_of(path, root)] += sum(1 for _ in f)
    return dict(counts)


def main():
    edges = import_map()
    counts = line_counts()
    print("| package | lines | imports |")
    print("|---|---|---|")
    for package in sorted(counts):
        print(f"| {package} | {counts[package]} | {', '.join(sorted(edges.get(package, {})))} |")
    print(f"\ntotal: {sum(counts.values())} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
