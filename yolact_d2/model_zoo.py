# Copyright (c) yolact_d2 contributors.
"""
The configs that ship with yolact_d2 (``yolact_d2/configs``, also reachable as ``configs/`` at
the repository root), found by name as Detectron2's ``model_zoo.get_config_file`` finds its own.
"""

import os

__all__ = ["CONFIG_DIR", "get_config_file"]

# Package data: installed with the package (setup.py's package_data).
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def get_config_file(name: str) -> str:
    """
    Args:
        name (str): a config's path relative to the configs folder, e.g.
            "yolact_R_50_FPN_550.yaml" or "demo/yolact_R_18_synthetic.yaml".

    Returns:
        str: its path.

    Raises:
        FileNotFoundError: no such config ships with yolact_d2.
    """
    path = os.path.join(CONFIG_DIR, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"yolact_d2 has no config {name!r} (in {CONFIG_DIR})")
    return path
