# Copyright (c) yolact_d2 contributors.
"""
tools/predict_dataset.py on Ray Data (one local Ray for the module, the tool called in-process
as a script on a Ray it did not start): the json is the demo's, byte for byte, with 1 and 2
workers; a rerun predicts only the shards whose file is missing; unreadable and missing inputs
are listed with exit code 1; a registered dataset keeps its ids; an exported model runs as
ExportedPredictor does.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from yolact_d2.benchmark.calibration import calibrate_batch_norm
from yolact_d2.deploy import ExportedPredictor, build_export_model, export_model
from yolact_d2.engine.cli import load_config
from yolact_d2.engine.inference_demo import dataset_category_ids
from yolact_d2.evaluation import instances_to_coco_results
from yolact_d2.scale import plan_shards, run_fingerprint

from common import REPO_ROOT, load_script

CONFIG = os.path.join(REPO_ROOT, "configs", "demo", "yolact_R_18_synthetic.yaml")
TINY_COCO = os.environ["YOLACT_D2_TINY_COCO"]
# Ray Data's own configuration reads its deprecated settings when the context is copied.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")
VAL_IMAGES = ["000000006818.jpg", "000000017627.jpg", "000000025560.jpg", "000000037777.jpg"]


TOOL = load_script("tools/predict_dataset.py")


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (its start-up takes seconds); the tool reuses it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The demo model with seeded random weights (BatchNorm statistics of one tiny_coco image,
    so that scores are not all tied), saved: every worker loads the same weights."""
    cfg = load_config(CONFIG, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg)
    image = cv2.imread(os.path.join(TINY_COCO, "val2017", VAL_IMAGES[0]))[:, :, ::-1]
    calibrate_batch_norm(model, cv2.resize(image, (160, 160)))
    path = str(tmp_path_factory.mktemp("weights") / "r18_random.pth")
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Five tiny_coco images (COCO names: their numbers are the ids) and one named otherwise
    (its position is its id)."""
    folder = tmp_path_factory.mktemp("images")
    for name in VAL_IMAGES + ["000000041888.jpg"]:
        shutil.copy(os.path.join(TINY_COCO, "val2017", name), folder / name)
    shutil.copy(os.path.join(TINY_COCO, "train2017", "000000005802.jpg"), folder / "photo.jpg")
    return str(folder)


def _opts(weights):
    return ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"]


@pytest.fixture(scope="module")
def demo_json(weights, images, tmp_path_factory):
    """The bytes of tools/demo.py --output-json on ``images``, on one thread as the workers."""
    out = tmp_path_factory.mktemp("demo") / "demo.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "demo.py"), "--config-file", CONFIG,
         "--input", images, "--output-json", str(out), "--batch-size", "2", *_opts(weights)],
        capture_output=True, text=True, cwd=REPO_ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out.read_bytes()


def _predict(*args):
    return TOOL.main(["--config-file", CONFIG, *[str(a) for a in args]])


@pytest.fixture
def tool_log():
    """The messages the tool logs to ``yolact_d2`` during the test.

    Read from the logger itself: the handler ``setup_logger`` adds keeps the ``sys.stdout`` of
    whichever test first set it up, so capfd/capsys do not see it later in a full run.
    """
    messages = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("yolact_d2")
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def _key(result):
    return result["image_id"], result["score"], result["bbox"]


def test_json_is_the_demos_and_a_rerun_predicts_only_missing_shards(
    ray_session, weights, images, demo_json, tmp_path, tool_log
):
    out, parquet = tmp_path / "out.json", tmp_path / "out.parquet"
    args = ["--input", images, "--output-json", out, "--shard-size", 2, "--batch-size", 2]
    assert _predict(*args, "--parquet", parquet, *_opts(weights)) == 0
    results = json.loads(out.read_text())
    assert sorted(results, key=_key) == sorted(json.loads(demo_json), key=_key)
    assert out.read_bytes() == demo_json  # and in the same order
    ids = {r["file_name"]: r["image_id"] for r in results}
    assert ids["photo.jpg"] == 5 and ids["000000006818.jpg"] == 6818
    import pyarrow.parquet as pq

    assert pq.read_table(parquet).to_pylist() == results
    # A rerun after one shard file is lost predicts that shard only.
    shards = sorted((tmp_path / "out.shards").iterdir())
    assert len(shards) == 3
    stamps = {p.name: p.stat().st_mtime_ns for p in shards}
    shards[1].unlink()
    tool_log.clear()
    assert _predict(*args, *_opts(weights)) == 0
    assert any("1 shards (2 images) to predict, 2 already written" in m for m in tool_log)
    assert {p.name: p.stat().st_mtime_ns for p in shards if p != shards[1]} == {
        name: stamp for name, stamp in stamps.items() if name != shards[1].name
    }
    assert shards[1].is_file() and out.read_bytes() == demo_json


def test_shards_are_named_by_their_images_and_the_settings(weights):
    cfg = load_config(CONFIG, _opts(weights))
    entries = [(i, f"/images/{i}.jpg") for i in range(5)]
    shards = plan_shards(entries, 2, run_fingerprint(cfg))
    assert [len(s.entries) for s in shards] == [2, 2, 1]
    assert [s.name for s in shards] == [
        s.name for s in plan_shards(entries, 2, run_fingerprint(cfg))
    ]
    assert shards[0].name.startswith("shard-00000-") and shards[2].name.startswith("shard-00002-")
    # Another image in a shard, another config value or --polygons: other names, no reuse.
    moved = plan_shards(entries[:1] + [(9, "/images/9.jpg")] + entries[2:], 2, run_fingerprint(cfg))
    assert moved[0].name != shards[0].name and moved[1].name == shards[1].name
    other = cfg.clone()
    other.MODEL.YOLACT.TEST.SCORE_THRESH = 0.5
    for fingerprint in (run_fingerprint(other), run_fingerprint(cfg, polygons=True)):
        assert not {s.name for s in plan_shards(entries, 2, fingerprint)} & {s.name for s in shards}


def test_a_killed_run_resumes_on_a_running_cluster(
    ray_session, weights, images, demo_json, tmp_path, tool_log
):
    """The tool connects to the module's Ray (--ray-address) and is SIGKILLed once its first
    shard file is written; the rerun predicts the rest only, and the json is the demo's."""
    import ray

    out = tmp_path / "out.json"
    args = ["--input", images, "--output-json", out, "--shard-size", 2, "--batch-size", 2]
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "predict_dataset.py"),
         "--config-file", CONFIG, *map(str, args), "--ray-address", address, *_opts(weights)],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    shard_dir = tmp_path / "out.shards"
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if shard_dir.is_dir() and any(p.name.startswith("shard-") for p in shard_dir.iterdir()):
            proc.kill()
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    written = [p for p in shard_dir.iterdir() if p.name.startswith("shard-")]
    assert 1 <= len(written) < 3 and not out.exists()
    tool_log.clear()
    assert _predict(*args, *_opts(weights)) == 0
    todo = 3 - len(written)
    expected = f"{todo} shards ({2 * todo} images) to predict, {len(written)} already"
    assert any(expected in m for m in tool_log), tool_log
    assert out.read_bytes() == demo_json


def test_two_workers_give_the_same_json(ray_session, weights, images, demo_json, tmp_path):
    out = tmp_path / "out.json"
    args = ["--input", images, "--output-json", out, "--shard-size", 2, "--batch-size", 2]
    assert _predict(*args, "--num-workers", 2, *_opts(weights)) == 0
    assert out.read_bytes() == demo_json


def test_unreadable_and_missing_inputs_are_listed_with_exit_code_1(
    ray_session, weights, images, tmp_path, capfd
):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    shutil.copy(os.path.join(images, VAL_IMAGES[1]), tmp_path / VAL_IMAGES[1])
    listing = tmp_path / "list.txt"
    listing.write_text(
        f"# a list: absolute or relative to its folder\n{os.path.join(images, VAL_IMAGES[0])}\n"
        f"broken.jpg\n\n{VAL_IMAGES[1]}\n"
    )
    out = tmp_path / "out.json"
    missing = str(tmp_path / "nothing" / "*.jpg")
    args = ["--input", listing, missing, "--output-json", out, "--opts", *_opts(weights)]
    capfd.readouterr()
    assert _predict(*args) == 1
    err = capfd.readouterr().err
    assert f"2 input(s) failed: {missing}, {tmp_path / 'broken.jpg'}" in err
    results = json.loads(out.read_text())
    assert {r["image_id"] for r in results} == {6818, 17627}
    # The failures are kept with their shard: a rerun predicts nothing and says so again.
    assert _predict(*args) == 1
    assert "2 input(s) failed" in capfd.readouterr().err


def test_registered_dataset_keeps_its_ids(ray_session, weights, tmp_path):
    name = "tiny_coco_train_first8"
    out = tmp_path / "out.json"
    args = ["--dataset", name, "--output-json", out, "--shard-size", 3, "--polygons"]
    assert _predict(*args, *_opts(weights)) == 0
    results = json.loads(out.read_text())
    records = DatasetCatalog.get(name)
    assert {r["image_id"] for r in results} == {r["image_id"] for r in records}
    coco_ids = dataset_category_ids(MetadataCatalog.get(name))
    assert {r["category_id"] for r in results} <= set(coco_ids[:4])
    assert all("polygons" in r for r in results)


def test_exported_model_runs_as_exported_predictor(ray_session, weights, images, tmp_path):
    cfg = load_config(CONFIG, _opts(weights))
    path = export_model(cfg, build_export_model(cfg), "onnx", str(tmp_path / "export"))
    out = tmp_path / "out.json"
    pattern = os.path.join(images, "0000000[12]*.jpg")
    assert _predict("--input", pattern, "--output-json", out, "--model", path, *_opts(weights)) == 0
    predictor = ExportedPredictor(path, "onnxruntime", num_threads=1)
    category_ids = dataset_category_ids(MetadataCatalog.get(cfg.DATASETS.TEST[0]))
    expected = []
    for name in VAL_IMAGES[1:3]:
        instances = predictor(cv2.imread(os.path.join(images, name)))["instances"]
        results = instances_to_coco_results(instances, int(name[:-4]), category_ids)
        expected += [dict(r, file_name=name) for r in results]
    assert expected and json.loads(out.read_text()) == expected


def test_bad_arguments_exit_with_code_2(weights, images, tmp_path, capsys):
    fake = tmp_path / "model.onnx"
    fake.write_text("not a model")
    cases = [
        (["--input", images, "--output-json", tmp_path / "no" / "out.json"], "does not exist"),
        (["--output-json", tmp_path / "out.json"], "nothing to run on"),
        (["--input", images, "--output-json", tmp_path / "o.json", "--num-workers", 0], "least 1"),
        (["--input", images, "--output-json", tmp_path / "o.json", "--model", fake], "model"),
    ]
    for args, message in cases:
        assert _predict(*args, *_opts(weights)) == 2
        assert message in capsys.readouterr().err
