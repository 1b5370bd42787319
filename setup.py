#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
from setuptools import find_packages, setup

setup(
    name="yolact_d2",
    version="0.1.0",
    description="YOLACT and YOLACT++ real-time instance segmentation as a Detectron2 extension",
    python_requires=">=3.9",
    packages=find_packages(exclude=("tests", "tools", "configs")),
    # Detectron2 itself is not on PyPI and cannot be a normal requirement: install it first
    # (see README.md, or run dev/setup_env.sh which does it).
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "numpy<2",
        "fvcore",
        "iopath",
        "pycocotools>=2.0.2",
        "opencv-python-headless<4.12",
        "matplotlib",
        "scikit-image",
    ],
    # The formatters are pinned: their style changes between releases (the blank line after a
    # module docstring, for one), and every developer must format alike.
    extras_require={"dev": ["pytest", "black==26.10.1", "isort==9.0.2", "flake8==7.5.0"]},
)
