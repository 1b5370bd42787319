#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
r"""
Run an exported YOLACT (model.onnx from tools/export_model.py) with nothing but numpy, OpenCV and
onnxruntime: no PyTorch, Detectron2 or yolact_d2 needed. Copy this file next to the model.

    python tools/onnx_inference.py export/model.onnx --input photos/ a.jpg "more/*.png" \
        --output results/

writes results/<image>.png (masks, boxes and labels drawn) for every image and
results/detections.json: one COCO result per detection (image_id, category_id, bbox as XYWH,
score, segmentation as compressed RLE; "mask_score" for YOLACT++; "file_name"). The image_id is
the number of a COCO-style file name (000000000139.jpg -> 139), else the image's position.
"""

import argparse
import glob
import json
import numpy as np
import os
import sys

import cv2
import onnxruntime

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("model", help="model.onnx written by tools/export_model.py")
    parser.add_argument("--input", nargs="+", required=True, help="image files, folders, globs")
    parser.add_argument("--output", required=True, help="directory for drawings and json")
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=None,
        help="detections drawn and written from this score (default: the model's display "
        "threshold, in its metadata)",
    )
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: auto)")
    return parser.parse_args(argv)


def list_images(inputs):
    """Files, folders (recursively, image extensions only) and globs, in a stable order."""
    found = []
    for item in inputs:
        if os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs.sort()
                found += [
                    os.path.join(root, f)
                    for f in sorted(files)
                    if f.lower().endswith(IMAGE_EXTENSIONS)
                ]
        elif os.path.isfile(item):
            found.append(item)
        else:
            matches = sorted(glob.glob(item))
            if not matches:
                raise SystemExit(f"error: input {item!r} does not exist")
            found += matches
    return found


def encode_rle(mask):
    """
    COCO's compressed RLE of a bool (H, W) mask: run lengths in column-major order, starting
    with a run of zeros, each stored as the difference to the run two before (after the first
    two) in 5-bit groups, low group first, 0x20 flagging that more follow, offset by 48.
    """
    flat = np.asfortranarray(mask).ravel(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    chars = []
    for i, count in enumerate(counts):
        value = count - counts[i - 2] if i > 2 else count
        while True:
            group = value & 0x1F
            value >>= 5
            more = not ((value == 0 and not group & 0x10) or (value == -1 and group & 0x10))
            chars.append(chr(group + 48 + (0x20 if more else 0)))
            if not more:
                break
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": "".join(chars)}


def paste_mask(mask, height, width, threshold):
    """A prototype-resolution soft mask stretched to the image (bilinear) and thresholded."""
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR) > threshold


def color_of(index):
    hue = (index * 47) % 180
    bgr = cv2.cvtColor(np.uint8([[[hue, 200, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return tuple(int(c) for c in bgr)


def image_id_of(path, position):
    stem = os.path.splitext(os.path.basename(path))[0]
    return int(stem) if stem.isdigit() else position


class YolactOnnx:
    """The model and what its metadata says (input format, classes, thresholds)."""

    def __init__(self, path, threads=0):
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            path, options, providers=["CPUExecutionProvider"]
        )
        meta = self.session.get_modelmeta().custom_metadata_map
        if "yolact_d2_version" not in meta:
            raise SystemExit(f"error: {path!r} carries no yolact_d2 metadata")
        self.input_format = meta["input_format"]
        self.outputs = json.loads(meta["outputs"])
        self.class_names = json.loads(meta["class_names"])
        self.category_ids = json.loads(meta["category_ids"])
        self.mask_threshold = float(meta["mask_threshold"])
        self.display_threshold = float(meta["display_score_threshold"])

    def __call__(self, bgr):
        image = bgr[:, :, ::-1] if self.input_format == "RGB" else bgr
        values = self.session.run(None, {"image": np.ascontiguousarray(image)})
        return dict(zip(self.outputs, values))


def process(model, bgr, threshold, image_id, file_name):
    """Draws the detections of one image and returns (drawing, COCO results)."""
    out = model(bgr)
    height, width = bgr.shape[:2]
    drawing = bgr.copy()
    results = []
    for i in np.flatnonzero(out["scores"] >= threshold):
        x1, y1, x2, y2 = (float(v) for v in out["boxes"][i])
        cls = int(out["classes"][i])
        mask = paste_mask(out["masks"][i], height, width, model.mask_threshold)
        color = np.array(color_of(len(results)), dtype=np.float32)
        drawing[mask] = (0.5 * drawing[mask] + 0.5 * color).astype(np.uint8)
        cv2.rectangle(drawing, (int(x1), int(y1)), (int(x2), int(y2)), color.tolist(), 2)
        label = f"{model.class_names[cls]} {out['scores'][i]:.2f}"
        cv2.putText(drawing, label, (int(x1), max(int(y1) - 3, 10)), 0, 0.45, (255, 255, 255), 1)
        result = {
            "image_id": image_id,
            "file_name": file_name,
            "category_id": int(model.category_ids[cls]),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(out["scores"][i]),
            "segmentation": encode_rle(mask),
        }
        if "mask_scores" in out:
            result["mask_score"] = float(out["mask_scores"][i])
        results.append(result)
    return drawing, results


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isfile(args.model):
        raise SystemExit(f"error: model {args.model!r} does not exist")
    model = YolactOnnx(args.model, args.threads)
    threshold = args.confidence_threshold
    if threshold is None:
        threshold = model.display_threshold
    os.makedirs(args.output, exist_ok=True)
    all_results, failed = [], []
    for position, path in enumerate(list_images(args.input)):
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            print(f"{path}: cannot read this image, skipped", file=sys.stderr)
            failed.append(path)
            continue
        name = os.path.basename(path)
        drawing, results = process(model, bgr, threshold, image_id_of(path, position), name)
        cv2.imwrite(os.path.join(args.output, os.path.splitext(name)[0] + ".png"), drawing)
        all_results += results
        print(f"{path}: {len(results)} detections")
    with open(os.path.join(args.output, "detections.json"), "w") as f:
        json.dump(all_results, f)
    if failed:
        print(f"{len(failed)} image(s) could not be read", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
