#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
r"""
Run an exported YOLACT (model.onnx from tools/export_model.py) with nothing but numpy, OpenCV and
onnxruntime: no PyTorch, Detectron2 or yolact_d2 needed. Copy this file next to the model.

    python tools/onnx_inference.py export/model.onnx --input examples/images \
        "datasets/tiny_coco/val2017/*.jpg" --output results/

writes results/<image>.png (masks, boxes and labels drawn) for every image and
results/detections.json: one COCO result per detection the model returns, whatever
--confidence-threshold says (it only chooses what is drawn), as "tools/demo.py --output-json"
writes them: image_id, category_id, bbox as XYWH, score, segmentation as compressed RLE,
"mask_score" for YOLACT++, "file_name". The image_id is the number of a COCO-style file name
(000000000139.jpg -> 139), else the image's position among the inputs; with
--image-ids-from ANNOTATIONS.json it is the id that json gives the image's file name, so that
the file can be scored against those annotations with COCOeval.

Inputs that do not exist and images that cannot be read are reported and skipped, the rest is
processed, and the exit code is 1; with no image at all the exit code is 2.
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
        help="detections drawn from this score (default: the model's display threshold, in "
        "its metadata); detections.json keeps every detection",
    )
    parser.add_argument(
        "--image-ids-from",
        metavar="ANNOTATIONS.json",
        help="number images as this COCO json does (matched by file name)",
    )
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: auto)")
    return parser.parse_args(argv)


def fail(message):
    """A bad model, annotations file or input list: one error line, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def list_images(inputs, missing):
    """
    Files, folders (recursively, image extensions only) and globs, in a stable order; inputs
    that match nothing are appended to ``missing``.
    """
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
                missing.append(item)
            found += [m for m in matches if os.path.isfile(m)]
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


def read_image_ids(annotations):
    """{file name: image id} of a COCO json's "images"."""
    try:
        with open(annotations) as f:
            images = json.load(f)["images"]
        return {os.path.basename(im["file_name"]): int(im["id"]) for im in images}
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(f"--image-ids-from {annotations!r}: not a COCO json ({e})")


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
            fail(f"{path!r} carries no yolact_d2 metadata")
        if meta.get("graph", "pipeline") != "pipeline":
            fail(
                f"{path!r} holds the network only (exported with --graph network): its "
                "post-processing runs in PyTorch (yolact_d2.deploy.ExportedPredictor); export "
                "with --graph pipeline for this runner"
            )
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
    """
    Returns the drawing of one image (detections scoring at least ``threshold``) and the COCO
    results of all its detections.
    """
    out = model(bgr)
    height, width = bgr.shape[:2]
    drawing = bgr.copy()
    results = []
    for i in range(len(out["scores"])):
        x1, y1, x2, y2 = (float(v) for v in out["boxes"][i])
        cls = int(out["classes"][i])
        mask = paste_mask(out["masks"][i], height, width, model.mask_threshold)
        if out["scores"][i] >= threshold:
            color = np.array(color_of(i), dtype=np.float32)
            drawing[mask] = (0.5 * drawing[mask] + 0.5 * color).astype(np.uint8)
            cv2.rectangle(drawing, (int(x1), int(y1)), (int(x2), int(y2)), color.tolist(), 2)
            label = f"{model.class_names[cls]} {out['scores'][i]:.2f}"
            corner = (int(x1), max(int(y1) - 3, 10))
            cv2.putText(drawing, label, corner, 0, 0.45, (255, 255, 255), 1)
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
        fail(f"model {args.model!r} does not exist")
    model = YolactOnnx(args.model, args.threads)
    threshold = args.confidence_threshold
    if threshold is None:
        threshold = model.display_threshold
    ids = read_image_ids(args.image_ids_from) if args.image_ids_from else None
    failed = []
    paths = list_images(args.input, failed)
    for item in failed:
        print(f"input {item!r} does not exist, skipped", file=sys.stderr)
    if not paths:
        fail(f"no images found in {args.input}")
    os.makedirs(args.output, exist_ok=True)
    all_results = []
    for position, path in enumerate(paths):
        name = os.path.basename(path)
        if ids is not None and name not in ids:
            print(f"{path}: not an image of {args.image_ids_from}, skipped", file=sys.stderr)
            failed.append(path)
            continue
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            print(f"{path}: cannot read this image, skipped", file=sys.stderr)
            failed.append(path)
            continue
        image_id = ids[name] if ids is not None else image_id_of(path, position)
        drawing, results = process(model, bgr, threshold, image_id, name)
        cv2.imwrite(os.path.join(args.output, os.path.splitext(name)[0] + ".png"), drawing)
        all_results += results
        drawn = sum(r["score"] >= threshold for r in results)
        print(f"{path}: {len(results)} detections, {drawn} drawn")
    json_path = os.path.join(args.output, "detections.json")
    with open(json_path + ".partial", "w") as f:  # a crash never leaves a half-written json
        json.dump(all_results, f)
    os.replace(json_path + ".partial", json_path)
    print(f"{len(all_results)} detections written to {json_path}")
    if failed:
        print(f"{len(failed)} input(s) failed: " + ", ".join(failed), file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
