#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
from setuptools import find_packages, setup

setup(
    name="yolact_d2",
    version="0.1.0",
    description="YOLACT and YOLACT++ real-time instance segmentation as a Detectron2 extension",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(exclude=("tests", "tools")),
    # The configs ship with the package (yolact_d2.model_zoo.get_config_file).
    package_data={"yolact_d2": ["configs/*.yaml", "configs/*/*.yaml"]},
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
    # The test and style tools are pinned: the formatters' style changes between releases (the
    # blank line after a module docstring, for one), and under pytest 9.0.3 (which a venv that
    # shares the system's packages, the "keep your Detectron2" set-up, picked up) 15 log
    # assertions saw nothing after Detectron2's setup_logger had run; under 9.2.0 they pass.
    # Deployment (yolact_d2.deploy, tools/export_model.py, tools/onnx_inference.py,
    # tools/quantize.py): versions that resolve together with numpy<2 (Detectron2's pin)
    # (checked from a fresh Python 3.11 venv).
    extras_require={
        "dev": [
            "pytest==9.2.0",
            "pytest-xdist==3.8.0",
            "hypothesis==6.170.17",
            "black==26.10.1",
            "isort==9.0.2",
            "flake8==7.5.0",
        ],
        "deploy": [
            "onnx==1.23.2",
            "onnxscript==0.7.2",
            "onnxruntime==1.32.0",
            "openvino==2026.4.1",
            # int8 post-training quantisation (yolact_d2.deploy.quantize, tools/quantize.py).
            "nncf==3.4.0",
        ],
        # Inference over large image collections on Ray Data (tools/predict_dataset.py, on one
        # machine or a cluster). pyarrow 26 needs NumPy 2, so the last release before it is
        # pinned (checked: these import and "pip check" is clean with numpy<2 on Python 3.11).
        "scale": [
            "ray[data]==2.60.0",
            "pyarrow==25.0.1",
        ],
        # Tracking on video (yolact_d2.engine.tracking, tools/demo.py --track) and its metrics
        # (tools/evaluate_tracking.py). ByteTrack comes from supervision 0.30.9, the last release
        # that ships it: its successor, Roboflow's `trackers`, requires numpy>=2.0.2 in every
        # release (2.0.0 to 2.6.1), which Detectron2's metadata (numpy<2) rules out here.
        # supervision 0.30 needs no OpenCV package of its own (0.29 and older require
        # opencv-python, which would install a second cv2 over opencv-python-headless).
        # MOTA, IDF1 and ID switches: motmetrics (trackeval, for HOTA, requires numpy>=2.3.2).
        "video": [
            "supervision==0.30.9",
            "motmetrics==1.4.0",
        ],
    },
)
