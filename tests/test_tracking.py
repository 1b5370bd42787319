# Copyright (c) yolact_d2 contributors.
"""
Tracking on video (yolact_d2.engine.tracking): identities across frames, the mask coefficients
as an optional model output, the json and MOTChallenge writers, the synthetic videos with known
identities, tools/evaluate_tracking.py and ``tools/demo.py --track`` end to end.
"""

import contextlib
import io
import json
import numpy as np
import os
import re
import subprocess
import sys

import cv2
import pytest
import torch

from detectron2.structures import Boxes, Instances

from yolact_d2.data.synthetic_video import VideoSpec, render_video, write_synthetic_videos

from common import REPO_ROOT, calibrate_detections, get_model, load_script

pytest.importorskip("supervision", reason='tracking needs the extra "video"')

from yolact_d2.engine.tracking import (  # noqa: E402  (after the extra's check)
    InstanceTracker,
    mot_lines,
    read_mot,
    track_frames,
    track_results,
    write_mot,
)

SIZE = (160, 160)


def frame_instances(boxes, scores=None, classes=None) -> Instances:
    """Predictions of one frame: boxes (D, 4) XYXY, masks filling them."""
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    instances = Instances(SIZE)
    instances.pred_boxes = Boxes(boxes)
    count = len(boxes)
    instances.scores = torch.tensor([0.9] * count if scores is None else scores)
    instances.pred_classes = torch.tensor([0] * count if classes is None else classes)
    masks = torch.zeros((count,) + SIZE, dtype=torch.bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.round().long().clamp(0, 160).tolist()):
        mask[y0:y1, x0:x1] = True
    instances.pred_masks = masks
    return instances


def box_at(x, y, side=24):
    return [x, y, x + side, y + side]


def test_a_translating_object_keeps_its_id():
    tracker = InstanceTracker("bytetrack")
    seen = []
    for t in range(30):
        # Two objects, one moving right 4 px a frame, one down 2 px, plus a weak false detection.
        out = tracker(
            frame_instances(
                [box_at(5 + 4 * t, 10), box_at(120, 20 + 2 * t), box_at(60, 130, 10)],
                scores=[0.9, 0.8, 0.05],
            )
        )
        assert len(out) == 2 and out.track_ids.dtype == torch.int64
        seen.append(out.track_ids.tolist())
        # The tracked detections are the input's, in its order, with all their fields.
        assert torch.equal(
            out.pred_boxes.tensor[0], torch.tensor(box_at(5 + 4 * t, 10), dtype=torch.float32)
        )
        assert out.pred_masks.shape == (2,) + SIZE
    assert all(ids == [1, 2] for ids in seen)
    assert tracker.frames == 30 and tracker.seconds > 0


def test_an_appearing_object_gets_a_new_id():
    tracker = InstanceTracker("bytetrack")
    ids = []
    for t in range(12):
        boxes = [box_at(10 + 2 * t, 10)] + ([box_at(100, 100 - 3 * t)] if t >= 5 else [])
        ids.append(tracker(frame_instances(boxes)).track_ids.tolist())
    assert all(frame == [1] for frame in ids[:5])
    # ByteTrack confirms a track started after the first frame on its second detection.
    assert ids[5] == [1] and all(frame == [1, 2] for frame in ids[6:])


def test_ids_survive_a_three_frame_occlusion():
    tracker = InstanceTracker("bytetrack")
    ids = []
    for t in range(16):
        boxes = [box_at(60, 60)]  # a still object in front
        if t not in (6, 7, 8):  # the moving one is hidden for 3 frames
            boxes.append(box_at(5 + 5 * t, 40))
        ids.append(sorted(tracker(frame_instances(boxes)).track_ids.tolist()))
    assert ids[:6] == [[1, 2]] * 6 and ids[6:9] == [[1]] * 3 and ids[9:] == [[1, 2]] * 7


def test_tracker_restarts_on_reset_and_rejects_unknown_names():
    tracker = InstanceTracker()
    for t in range(3):
        tracker(frame_instances([box_at(10 + t, 10)]))
    tracker.reset()
    assert tracker.frames == 0
    assert tracker(frame_instances([box_at(100, 100)])).track_ids.tolist() == [1]
    assert len(tracker(frame_instances(np.zeros((0, 4))))) == 0
    with pytest.raises(ValueError, match="tracker must be one of"):
        InstanceTracker("deepsort")


def test_json_and_mot_writers_round_trip(tmp_path):
    tracker = InstanceTracker()
    results, lines = [], []
    boxes_by_frame = {}
    for frame in range(4):
        boxes = [box_at(10 + 3 * frame, 10), [50.5, 60.25, 90.75, 100.0]]
        out = tracker(frame_instances(boxes, scores=[0.9, 0.7], classes=[2, 1]))
        boxes_by_frame[frame] = out
        results += track_results(out, frame, category_ids=[1, 2, 3, 4])
        lines += mot_lines(out, frame)
    path = tmp_path / "tracks.json"
    path.write_text(json.dumps(results))
    loaded = json.loads(path.read_text())
    assert loaded == results and len(loaded) == 8
    first = loaded[0]
    assert first["frame"] == first["image_id"] == 0 and first["track_id"] == 1
    assert first["category_id"] == 3 and first["bbox"] == [10.0, 10.0, 24.0, 24.0]
    assert first["segmentation"]["size"] == list(SIZE) and first["score"] == pytest.approx(0.9)
    mot = tmp_path / "tracks.txt"
    write_mot(mot, lines)
    rows = read_mot(str(mot))
    assert rows.shape == (8, 10)
    for row in rows:
        out = boxes_by_frame[int(row[0]) - 1]  # MOT frames from 1
        j = out.track_ids.tolist().index(int(row[1]))
        x0, y0, x1, y1 = out.pred_boxes.tensor[j].tolist()
        assert row[2:6] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=0.01)
        assert row[6] == pytest.approx(float(out.scores[j]), abs=1e-4)
    assert read_mot(str(tmp_path / "tracks.txt")).shape[0] == len(results)


def test_track_frames_takes_any_predictor():
    """A predictor is any callable returning {"instances": ...} (as ExportedPredictor)."""

    def predictor(frame):
        x = float(frame[0, 0, 0])
        return {"instances": frame_instances([box_at(x, 50)])}

    frames = [np.full((160, 160, 3), 10 + 3 * t, np.uint8) for t in range(5)]
    out = list(track_frames(predictor, frames))
    assert [i for i, _ in out] == list(range(5))
    assert [inst.track_ids.tolist() for _, inst in out] == [[1]] * 5


def test_mask_coefficients_are_an_optional_output_that_changes_nothing_else():
    opts = ["MODEL.YOLACT.TEST.SCORE_THRESH", 0.0]
    name = "demo/yolact_R_18_synthetic.yaml"
    plain = get_model(name, opts)
    with_coefficients = get_model(name, opts + ["MODEL.YOLACT.TEST.OUTPUT_COEFFICIENTS", True])
    image = torch.rand(3, 160, 160, generator=torch.Generator().manual_seed(0)) * 255
    inputs = [{"image": image, "height": 120, "width": 150}]
    with torch.no_grad():
        a = plain(inputs)[0]["instances"]
        b = with_coefficients(inputs)[0]["instances"]
        outputs = with_coefficients.predict(with_coefficients.preprocess_image(inputs))
        detections = with_coefficients.postprocess(outputs, [(120, 150)], until="pixels")[0]
    assert len(a) > 10 and not a.has("pred_coefficients")
    assert set(b.get_fields()) == set(a.get_fields()) | {"pred_coefficients"}
    assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
    for field in ("scores", "pred_classes", "pred_masks"):
        assert torch.equal(a.get(field), b.get(field))
    k = outputs["coefficients"].shape[-1]
    assert b.pred_coefficients.shape == (len(b), k) and b.pred_coefficients.dtype == torch.float32
    assert torch.equal(b.pred_coefficients, outputs["coefficients"][0][detections["indices"]])


def test_synthetic_videos_have_known_identities(tmp_path):
    specs = [VideoSpec(seed=0, num_frames=20), VideoSpec(seed=5, crossing=True, num_frames=20)]
    entries = write_synthetic_videos(str(tmp_path), specs)
    assert [e["kind"] for e in entries] == ["lanes", "crossing"]
    for entry, spec in zip(entries, specs):
        frames = list(render_video(spec))
        truth = json.loads((tmp_path / entry["gt_json"]).read_text())
        rows = read_mot(str(tmp_path / entry["gt_mot"]))
        assert len(truth) == len(rows) == sum(len(objects) for _, objects in frames)
        capture = cv2.VideoCapture(str(tmp_path / entry["video"]))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 20
        ok, first = capture.read()
        capture.release()
        # mp4 compression keeps the frame close to the rendered one.
        assert ok and np.abs(first.astype(int) - frames[0][0].astype(int)).mean() < 8
        for t, (bgr, objects) in enumerate(frames):
            assert bgr.shape == (160, 160, 3) and bgr.dtype == np.uint8
            ids = [o.track_id for o in objects]
            assert len(set(ids)) == len(ids)
            for obj in objects:  # what is visible, and only that
                assert obj.mask.sum() >= spec.min_visible_area and 0 < obj.visibility <= 1
            if not spec.crossing:  # lanes: nothing covers anything
                assert all(o.visibility == 1 for o in objects)
        # The same spec renders the same video.
        again = list(render_video(spec))
        assert all(np.array_equal(a[0], b[0]) for a, b in zip(frames, again))
    # Crossing videos hide an object completely for a few frames, then show it again.
    presence = {}
    for t, (_, objects) in enumerate(render_video(specs[1])):
        for obj in objects:
            presence.setdefault(obj.track_id, []).append(t)
    gaps = [max(np.diff(ts)) - 1 for ts in presence.values() if len(ts) > 1]
    assert any(1 <= gap <= 8 for gap in gaps)


@pytest.fixture(scope="module")
def short_videos(tmp_path_factory):
    """(directory, weights): a "lanes" and a "crossing" video of 15 frames, and a random-weight
    main-job model calibrated on their first frames to detect like a trained one."""
    root = tmp_path_factory.mktemp("tracking")
    specs = [VideoSpec(seed=1, num_frames=15), VideoSpec(seed=5, crossing=True, num_frames=15)]
    write_synthetic_videos(str(root / "videos"), specs)
    model = get_model("demo/yolact_R_18_synthetic.yaml")
    frames = [next(render_video(spec))[0] for spec in specs]
    calibrate_detections(model, [f[:, :, ::-1].copy() for f in frames])
    weights = str(root / "weights.pth")
    torch.save({"model": model.state_dict()}, weights)
    return root / "videos", weights


def test_demo_tracks_a_video_end_to_end(short_videos, tmp_path):
    videos, weights = short_videos
    video = str(videos / "video_01.mp4")
    out = tmp_path / "out"
    out.mkdir()
    args = [
        "--config-file", os.path.join(REPO_ROOT, "configs", "demo", "yolact_R_18_synthetic.yaml"),
        "--video-input", video,
        "--track",
        "--output", str(out / "tracked.mp4"),
        "--output-json", str(out / "tracks.json"),
        "--output-mot", str(out / "tracks.txt"),
        "MODEL.WEIGHTS", weights,
        "MODEL.DEVICE", "cpu",
    ]  # fmt: skip
    proc = _run_demo(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert re.search(r"tracker \(bytetrack\): [0-9.]+ ms/frame, [0-9.]+% of the end-to-end", log)
    results = json.loads((out / "tracks.json").read_text())
    rows = read_mot(str(out / "tracks.txt"))
    assert results and len(rows) == len(results)
    for result, row in zip(results, rows):
        assert result["frame"] == result["image_id"] == row[0] - 1 and 0 <= result["frame"] < 15
        assert result["track_id"] == row[1] >= 1
        assert result["bbox"] == pytest.approx(list(row[2:6]), abs=0.01)
        assert {"segmentation", "score", "category_id"} <= set(result)
    capture = cv2.VideoCapture(str(out / "tracked.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 15
    capture.release()
    # A camera runs the same loop (a video file stands in for the device).
    webcam = args[:2] + ["--webcam", video, "--track", "--output-json", str(out / "cam.json")]
    assert _tool("demo").main(webcam + ["MODEL.WEIGHTS", weights]) == 0
    camera = json.loads((out / "cam.json").read_text())
    key = [(r["frame"], r["track_id"], r["bbox"]) for r in results]
    assert [(r["frame"], r["track_id"], r["bbox"]) for r in camera] == key
    # --track and --output-mot only make sense on a video or a camera.
    images = tmp_path / "frame.png"
    cv2.imwrite(str(images), np.zeros((32, 32, 3), np.uint8))
    for bad, message in [
        (
            ["--input", str(images), "--track", "--output-json", str(out / "x.json")],
            "--track needs",
        ),
        (["--video-input", video, "--output-mot", str(out / "y.txt")], "--output-mot needs"),
    ]:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = _tool("demo").main(args[:2] + bad + ["MODEL.WEIGHTS", weights])
        assert code == 2 and message in stderr.getvalue()


def _tool(name):
    """tools/<name>.py as a module (to run its main() in this process)."""
    return load_script(f"tools/{name}.py")


def _run_demo(*args):
    return subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "demo.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_evaluate_tracking_scores_trackers_against_the_ground_truth(short_videos, tmp_path, capsys):
    videos, weights = short_videos
    config = os.path.join(REPO_ROOT, "configs", "demo", "yolact_R_18_synthetic.yaml")
    report_path = tmp_path / "report.json"
    args = ["--videos", str(videos), "--config-file", config, "--output", str(report_path)]
    # (A random-weight model finds many objects; 10 a frame keep the test short.)
    opts = ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"]
    code = _tool("evaluate_tracking").main(
        args + opts + ["MODEL.YOLACT.TEST.DETECTIONS_PER_IMAGE", "10"]
    )
    assert code == 0
    report = json.loads(report_path.read_text())
    trackers = ["none", "bytetrack"]
    assert set(report["summary"]) == {"lanes", "crossing", "all"}
    for kind, per_tracker in report["summary"].items():
        assert list(per_tracker) == trackers
        for by_matching in per_tracker.values():
            for values in by_matching.values():
                assert values["videos"] == (2 if kind == "all" else 1)
                assert values["idf1"] <= 1 and values["num_frames"] == 15 * values["videos"]
    assert set(report["videos"]) == {"video_01", "video_05"}
    assert report["timing"]["frames"] == 30 and report["timing"]["model_ms"] > 0
    table = capsys.readouterr().out
    assert "| videos | tracker | IDF1 |" in table and "| crossing (1) | bytetrack |" in table
    # The ground truth scored as tracks is perfect.
    from yolact_d2.evaluation.tracking import summarize_tracking, tracking_accumulator

    truth = json.loads((videos / "video_05.gt.json").read_text())
    for masks in (False, True):
        perfect = summarize_tracking({"v": tracking_accumulator(truth, truth, 15, masks=masks)})
        assert perfect["v"]["idf1"] == perfect["v"]["mota"] == 1.0
        assert perfect["v"]["num_switches"] == 0
    # Swapping two identities halfway is two ID switches.
    ids = sorted({r["track_id"] for r in truth})[:2]
    swapped = [
        (
            dict(r, track_id=ids[1 - ids.index(r["track_id"])])
            if r["frame"] >= 8 and r["track_id"] in ids
            else r
        )
        for r in truth
    ]
    metrics = summarize_tracking({"v": tracking_accumulator(truth, swapped, 15)})["v"]
    assert metrics["num_switches"] == 2 and metrics["mota"] < 1 and metrics["idf1"] < 1


def test_one_object_found_as_two_classes_is_one_track():
    tracker = InstanceTracker()
    for t in range(5):
        box = box_at(10 + 2 * t, 10)
        out = tracker(frame_instances([box, box, box_at(90, 90)], [0.9, 0.6, 0.8], [0, 3, 1]))
        assert out.pred_classes.tolist() == [0, 1] and out.track_ids.tolist() == [1, 2]
    # duplicate_iou=1 keeps them all.
    tracker = InstanceTracker(duplicate_iou=1.0)
    for t in range(3):
        box = box_at(10 + 2 * t, 10)
        out = tracker(frame_instances([box, box], [0.9, 0.6], [0, 3]))
    assert sorted(out.track_ids.tolist()) == [1, 2]
