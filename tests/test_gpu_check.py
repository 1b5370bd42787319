# Copyright (c) yolact_d2 contributors.
"""
dev/gpu_check.sh carries to the GPU machine what its image lacks (dev/gpu_wheels.txt): the
carried wheels and the image's packages (dev/gpu_image_packages.txt) must cover every
third-party import of yolact_d2, train_net.py, dev/gpu_check.py and the tests it runs, and the
requirements of every carried distribution, read from the distributions' metadata.
"""

import ast
import importlib.metadata
import importlib.util
import json
import os
import re
import sys
import zipfile
from unittest import mock

import pytest
from packaging.requirements import Requirement

from common import REPO_ROOT, load_script
from simulated_cuda import SimulatedCuda, build_model_on_simulated_cuda

DEV = os.path.join(REPO_ROOT, "dev")
# What the GPU check imports: the package, the entry points, the tests it runs and theirs.
SOURCES = ["yolact_d2", "train_net.py", "dev/gpu_check.py"] + [
    f"tests/{name}.py"
    for name in ("test_cuda_placement", "test_nms", "test_training_step", "test_pinned_outputs",
                 "common", "pinned_outputs", "simulated_cuda", "training")
]  # fmt: skip
LOCAL = {
    "yolact_d2",
    "common",
    "pinned_outputs",
    "simulated_cuda",
    "training",
    "test_nms",
    "test_demo",
}
# Runs in a child process against a user's checkout of the original YOLACT (its own modules).
NOT_RUN = {os.path.join("yolact_d2", "benchmark", "original_worker.py")}
# The image's Python: what its markers are evaluated for.
GPU_ENVIRONMENT = {"python_version": "3.12", "python_full_version": "3.12.3", "extra": ""}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def carried():
    """{distribution: version} of dev/gpu_wheels.txt, and the names it leaves out on purpose."""
    pins, left_out = {}, set()
    with open(os.path.join(DEV, "gpu_wheels.txt")) as f:
        for line in f:
            if line.startswith("# not carried:"):
                left_out |= set(line.split(":", 1)[1].split())
            elif line.strip() and not line.startswith("#"):
                name, version = line.split()[0].split("==")
                pins[_normalise(name)] = version
    return pins, {_normalise(n) for n in left_out}


def image_packages():
    with open(os.path.join(DEV, "gpu_image_packages.txt")) as f:
        return {_normalise(w) for line in f if not line.startswith("#") for w in line.split()}


def third_party_imports():
    """Top-level module names imported anywhere in SOURCES (module level or in functions)."""
    files = []
    for source in SOURCES:
        path = os.path.join(REPO_ROOT, source)
        if os.path.isdir(path):
            files += [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
        else:
            files.append(path)
    files = [f for f in files if f.endswith(".py") and os.path.relpath(f, REPO_ROOT) not in NOT_RUN]
    names = set()
    for path in files:
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in LOCAL}


def _distribution_of(module: str) -> str:
    distributions = importlib.metadata.packages_distributions().get(module)
    assert distributions, f"no installed distribution provides the module {module!r}"
    return _normalise(distributions[0])


def test_every_import_is_carried_or_in_the_image():
    pins, left_out = carried()
    image = image_packages()
    modules = third_party_imports()
    assert {"torch", "detectron2", "cv2", "pycocotools", "fvcore"} <= modules
    missing = {}
    for module in sorted(modules):
        distribution = _distribution_of(module)
        if distribution not in pins and distribution not in image and distribution not in left_out:
            missing[module] = distribution
    assert missing == {}


def _requirements(distribution: str):
    """The requirements of ``distribution`` that apply to the GPU machine's Python."""
    for text in importlib.metadata.requires(distribution) or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate(GPU_ENVIRONMENT):
            yield _normalise(requirement.name)


def test_carried_distributions_have_their_requirements_and_the_installed_versions():
    pins, left_out = carried()
    image = image_packages()
    unmet = {}
    for distribution, version in pins.items():
        assert importlib.metadata.version(distribution) == version, distribution
        for name in _requirements(distribution):
            if name not in pins and name not in image and name not in left_out:
                unmet.setdefault(distribution, []).append(name)
    assert unmet == {}


CARRIED_WHEELS = os.path.join(REPO_ROOT, ".gpu_check", "wheels")


@pytest.mark.skipif(not os.path.isdir(CARRIED_WHEELS), reason="dev/gpu_check.sh --prepare not run")
def test_prepared_wheels_are_the_pinned_ones():
    """After --prepare: one wheel per pin (Detectron2 as its unpacked code), for CPython 3.12,
    with the pinned version in its own METADATA."""
    pins, _ = carried()
    found = {}
    for name in os.listdir(CARRIED_WHEELS):
        assert name.endswith(".whl"), name
        tags = name[:-4].split("-")[-3:]
        assert tags[0] in ("py3", "cp312", "py2.py3") or tags[0].startswith("py3"), name
        with zipfile.ZipFile(os.path.join(CARRIED_WHEELS, name)) as wheel:
            metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
            text = wheel.read(metadata).decode()
        fields = dict(re.findall(r"^(Name|Version): (.+)$", text, re.M))
        found[_normalise(fields["Name"])] = fields["Version"].strip()
    detectron2 = os.path.join(REPO_ROOT, ".gpu_check", "detectron2", "__init__.py")
    assert os.path.isfile(detectron2)
    assert found == {k: v for k, v in pins.items() if k != "sal-detectron2"}


def test_gpu_check_script_runs_on_simulated_cuda(tmp_path):
    """dev/gpu_check.py end to end, shrunk (2 images, R50 only, fp32 inference (float16
    convolutions take seconds on a CPU), 2 AMP training iterations of batch 2 at 96 x 96),
    with every model built on simulated CUDA: each section fills its table and nothing fails;
    the figures themselves mean nothing here."""
    gpu_check = load_script("dev/gpu_check.py")
    argv = ["gpu_check.py", "--output", str(tmp_path), "--num-images", "2", "--warmup", "1",
            "--yolact-configs", "yolact_R_50_FPN_550.yaml", "--precisions", "fp32",
            "--train-iters", "2", "--train-batch", "2", "--train-input-size", "96"]  # fmt: skip
    with SimulatedCuda(), mock.patch("sys.argv", argv), mock.patch(
        "detectron2.engine.defaults.build_model", build_model_on_simulated_cuda
    ), mock.patch("yolact_d2.engine.predictor.build_model", build_model_on_simulated_cuda):
        assert gpu_check.main() == 0
    with open(tmp_path / "gpu_check.json") as f:
        results = json.load(f)
    assert results["gpu"] == "simulated CUDA (CPU)"
    assert [r["model"] for r in results["inference"]] == [
        "yolact_R_50_FPN_550 fp32",
        "mask_rcnn_R_50_FPN_1x::full_workload fp32",
    ]
    assert all(r["images_per_s"] > 0 and r["x_mask_rcnn"] > 0 for r in results["inference"])
    assert [r["method"] for r in results["nms"]] == ["Fast NMS (CUDA)", "torchvision batched_nms"]
    assert [r["comparison"] for r in results["exactness"]] == ["CUDA fp32 vs CPU fp32"]
    exact = results["exactness"][0]
    # On simulated CUDA the same CPU kernels run: every detection matches exactly.
    assert exact["one_to_one"] == 1.0 and exact["min_mask_iou"] == 1.0
    assert results["training"][0]["iterations"] == 2 and results["training"][0]["all_finite"]
    assert (tmp_path / "gpu_check.md").read_text().startswith("# GPU check: simulated CUDA")
