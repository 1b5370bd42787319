#!/usr/bin/env bash
# The figures of docs/BENCHMARKS.md, "Keeping the aspect ratio": speed on 1280 x 720 frames and
# accuracy on wide and tall images, square mode against MODEL.YOLACT.PRESERVE_ASPECT_RATIO.
# Run from the repository root in the activated venv; about 30 minutes on 2 cores. Writes under
# output/aspect/ and prints every figure. "bash dev/measure_aspect.sh speed" (or accuracy, video)
# runs one part.
set -euo pipefail
PART="${1:-all}"
OUT=output/aspect
WT_TRAIN="('yolact_synthetic_wide_tall_train',)"
WT_VAL="('yolact_synthetic_wide_tall_val',)"
CFG=configs/demo/yolact_R_18_synthetic.yaml
mkdir -p "$OUT"
grep -o 'amx[a-z_]*\|avx512_bf16\|avx512_vnni' /proc/cpuinfo | sort -u | tr '\n' ' '; echo

# 1. Speed: R50-550 end to end (DefaultPredictor), 20 tiny_coco images resized to 1280 x 720.
if [ "$PART" = all ] || [ "$PART" = speed ]; then
python tools/benchmark.py \
    --configs yolact_R_50_FPN_550.yaml yolact_R_50_FPN_550.yaml::MODEL.YOLACT.PRESERVE_ASPECT_RATIO=True \
    --image-size 720 1280 --precision fp32 fast --threads 2 --num-images 20 --calibrate 8 \
    --no-flops --no-stages --iou-images 0 --output "$OUT/speed"
fi

# 2. Accuracy on the wide (16:9) and tall (9:16) synthetic validation images.
if [ "$PART" = all ] || [ "$PART" = accuracy ]; then
[ -f output/demo_synthetic/model_final.pth ] || python tools/train_synthetic_demo.py
# the main job's square-trained model, in square mode and keeping the aspect ratio
python train_net.py --config-file $CFG --eval-only MODEL.WEIGHTS output/demo_synthetic/model_final.pth \
    DATASETS.TEST "$WT_VAL" OUTPUT_DIR "$OUT/square_model_square_mode"
python train_net.py --config-file $CFG --eval-only MODEL.WEIGHTS output/demo_synthetic/model_final.pth \
    DATASETS.TEST "$WT_VAL" MODEL.YOLACT.PRESERVE_ASPECT_RATIO True OUTPUT_DIR "$OUT/square_model_aspect_mode"
# the same schedule on the wide and tall training images, keeping the aspect ratio
python train_net.py --config-file $CFG MODEL.YOLACT.PRESERVE_ASPECT_RATIO True \
    DATASETS.TRAIN "$WT_TRAIN" DATASETS.TEST "$WT_VAL" OUTPUT_DIR "$OUT/aspect_trained"
fi

# 3. A 1280 x 720 video (the 20 frames above) through the demo with the aspect-trained model.
if [ "$PART" = all ] || [ "$PART" = video ]; then
python -c "
import cv2, glob
files = sorted(glob.glob('datasets/tiny_coco/val2017/*.jpg'))[:20]
writer = cv2.VideoWriter('$OUT/frames_720p.mp4', cv2.VideoWriter_fourcc(*'mp4v'), 10, (1280, 720))
for f in files:
    writer.write(cv2.resize(cv2.imread(f), (1280, 720), interpolation=cv2.INTER_AREA))
writer.release()
"
for MODE in False True; do
    python tools/demo.py --config-file $CFG --video-input "$OUT/frames_720p.mp4" \
        --output "$OUT/video_aspect_$MODE.mp4" MODEL.WEIGHTS "$OUT/aspect_trained/model_final.pth" \
        MODEL.YOLACT.PRESERVE_ASPECT_RATIO $MODE 2>&1 | grep "frames/s"
done
fi
