# Copyright (c) yolact_d2 contributors.
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The one place the tests take tiny_coco from: $YOLACT_D2_TINY_COCO, else the shared copy beside
# the checkout. Set before yolact_d2 is imported (it registers tiny_coco_* from it), and
# inherited by the tools the tests run in subprocesses.
TINY_COCO = os.environ.get("YOLACT_D2_TINY_COCO") or os.path.normpath(
    os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "datasets", "tiny_coco"
    )
)
os.environ["YOLACT_D2_TINY_COCO"] = TINY_COCO
# Two cores: keep each test process from oversubscribing them.
THREADS = max(1, min(2, os.cpu_count() or 1))
torch.set_num_threads(THREADS)


# The files that take longest (minutes each), longest first. dev/test.sh runs the suite on two
# pytest-xdist workers, each taking whole files in the order collected: starting with these lets
# the two workers finish together instead of one running the longest file alone at the end.
LONGEST_FIRST = [
    "test_deploy.py",
    "test_documented_commands.py",
    "test_benchmark.py",
    "test_cuda_placement.py",
    "test_gpu_check.py",
    "test_kill_resume.py",
    "test_demo_tool.py",
    "test_predict_dataset.py",
    "test_quantize.py",
]


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept within


@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test starts on THREADS threads, whatever the tests or in-process tools before it
    set (tools/benchmark.py --threads 1, ExportedPredictor(num_threads=...)): results that
    depend on the thread count in their last bits (the pinned outputs) then do not depend on
    which tests ran first."""
    torch.set_num_threads(THREADS)
    yield
