# Copyright (c) yolact_d2 contributors.
"""The YOLACT meta-architecture."""

import contextlib
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import BitMasks, ImageList, Instances

from yolact_d2.layers import NMS_FUNCTIONS
from yolact_d2.layers.input_size import aspect_preserving_size, batch_input_size, padded_input_size
from yolact_d2.utils.stages import stage

from .fast_cpu import InferenceCopy, resolve_fast_cpu_dtype
from .head import build_yolact_head
from .losses import YolactLoss
from .mask_branch import YolactMaskBranch, upgrade_legacy_keys
from .postprocessing import POSTPROCESS_STAGES, PostprocessSettings, postprocess_predictions
from .priors import YolactPriorGenerator

__all__ = ["Yolact", "POSTPROCESS_STAGES"]


def _upgrade_legacy_checkpoint(module, state_dict, prefix, *args) -> None:
    """A ``load_state_dict`` pre-hook: see :func:`upgrade_legacy_keys`."""
    upgrade_legacy_keys(state_dict, prefix)


@META_ARCH_REGISTRY.register()
class Yolact(nn.Module):
    """
    YOLACT (Bolya et al., ICCV 2019) and YOLACT++: a one-stage detector whose head also predicts
    k mask coefficients per prior, combined with the protonet's k prototypes into instance masks.

    Inputs follow Detectron2's contract (a list of dicts with "image" (C, H, W) in
    ``INPUT.FORMAT``, optional "height"/"width", and "instances" when training). Any image is
    resized to S x S ignoring the aspect ratio (bilinear, no antialiasing) inside the model, as the
    reference's pre-processing, or, with ``preserve_aspect_ratio``, its longest side to S and the
    other by the same factor, then padded (:mod:`yolact_d2.layers.input_size`); results are
    returned at the original ("height", "width") size with full-image ``pred_masks``.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        mask_branch: YolactMaskBranch,
        prior_generator: YolactPriorGenerator,
        loss: Optional[YolactLoss],
        head_in_features: List[str],
        input_size: int,
        pixel_mean,
        pixel_std,
        input_format: str = "RGB",
        num_classes: int = 80,
        box_variances=(0.1, 0.2),
        postprocess: PostprocessSettings = PostprocessSettings(),
        fast_cpu_inference: bool = False,
        fast_cpu_dtype: str = "auto",
        fast_cpu_compile: bool = False,
        cpu_inference_chunk: int = 1,
        preserve_aspect_ratio: bool = False,
    ):
        """
        NOTE: this interface is experimental.

        Args:
            backbone (Backbone): produces the FPN levels (e.g. :class:`YolactFPN`).
            head (nn.Module): prediction head (see :class:`YolactHead`).
            mask_branch (YolactMaskBranch): the protonet, the training-only semantic conv and
                YOLACT++'s mask-IoU net.
            prior_generator (YolactPriorGenerator): priors of all levels.
            loss (YolactLoss or None): training criterion (None for inference-only models).
            head_in_features (list[str]): FPN levels for the head, e.g. ["p3", ..., "p7"].
            input_size (int): S.
            pixel_mean, pixel_std (tuple[float]): normalisation, in ``input_format`` order.
            input_format (str): "RGB" or "BGR", the channel order of the input images.
            num_classes (int): foreground classes.
            box_variances (tuple[float, float]): SSD variances.
            postprocess (PostprocessSettings): the test-time options (``MODEL.YOLACT.TEST``,
                ``MODEL.YOLACT.MASKIOU``).
            fast_cpu_inference (bool): the fast CPU inference path: BatchNorm folded into the
                convs, channels_last activations, and autocast to ``fast_cpu_dtype``.
            fast_cpu_dtype (str): "bfloat16", "float32" (no autocast) or "auto" (bfloat16
                where the CPU has bf16 hardware, else float32; see
                :func:`~yolact_d2.modeling.fast_cpu.resolve_fast_cpu_dtype`).
            fast_cpu_compile (bool): on the fast CPU path, ``torch.compile`` the network
                (:class:`~yolact_d2.modeling.fast_cpu.CompiledModule`).
            cpu_inference_chunk (int): images per network call at inference on CPU (0: the
                whole batch); see :meth:`predict`.
            preserve_aspect_ratio (bool): resize the longest side to S keeping the aspect ratio
                and pad (see :meth:`preprocess_image`) instead of the reference's S x S resize.
        """
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.mask_branch = mask_branch
        self.prior_generator = prior_generator
        self.loss = loss
        self.head_in_features = list(head_in_features)
        self.input_size = int(input_size)
        self.input_format = input_format
        self.num_classes = num_classes
        self.box_variances = tuple(box_variances)
        if postprocess.nms_type not in NMS_FUNCTIONS:
            raise ValueError(
                f"MODEL.YOLACT.TEST.NMS_TYPE must be one of {sorted(NMS_FUNCTIONS)}, "
                f"got {postprocess.nms_type!r}"
            )
        self.postprocess_settings = postprocess
        # nms(boxes (n, 4), scores (C, n)) -> (scores, classes, order), settings bound.
        self._nms = postprocess.build_nms(self.input_size)
        self.fast_cpu_inference = fast_cpu_inference
        self.fast_cpu_dtype = resolve_fast_cpu_dtype(fast_cpu_dtype)
        self._inference_copy = InferenceCopy(self.fast_cpu_dtype, compile=fast_cpu_compile)
        if cpu_inference_chunk < 0:
            raise ValueError(
                f"MODEL.YOLACT.CPU_INFERENCE_CHUNK must be >= 0, got {cpu_inference_chunk}"
            )
        self.cpu_inference_chunk = int(cpu_inference_chunk)
        self.preserve_aspect_ratio = bool(preserve_aspect_ratio)
        # Checkpoints of yolact_d2 before the mask branch load into it, whatever loads them.
        self.register_load_state_dict_pre_hook(_upgrade_legacy_checkpoint)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        y = cfg.MODEL.YOLACT
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        missing = [f for f in y.IN_FEATURES if f not in shapes]
        if missing:
            raise ValueError(
                f"MODEL.YOLACT.IN_FEATURES {missing} are not produced by the backbone "
                f"(it has {sorted(shapes)})"
            )
        prior_generator = YolactPriorGenerator(cfg)
        head = build_yolact_head(
            cfg, [shapes[f] for f in y.IN_FEATURES], prior_generator.num_priors_per_location
        )
        if y.MASKIOU.ENABLED and y.INPUT_SIZE < 252:
            raise ValueError(
                "MODEL.YOLACT.MASKIOU.ENABLED needs MODEL.YOLACT.INPUT_SIZE >= 252 (the mask-IoU "
                f"net's five stride-2 convs need 63+ pixel prototypes); got {y.INPUT_SIZE}"
            )
        return {
            "backbone": backbone,
            "head": head,
            "mask_branch": YolactMaskBranch(cfg, shapes),
            "prior_generator": prior_generator,
            "loss": YolactLoss(cfg),
            "head_in_features": y.IN_FEATURES,
            "input_size": y.INPUT_SIZE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
            "num_classes": y.NUM_CLASSES,
            "box_variances": y.BOX_VARIANCES,
            "postprocess": PostprocessSettings.from_config(cfg),
            "fast_cpu_inference": y.FAST_CPU_INFERENCE,
            "fast_cpu_dtype": y.FAST_CPU_DTYPE,
            "fast_cpu_compile": y.FAST_CPU_COMPILE,
            "cpu_inference_chunk": y.CPU_INFERENCE_CHUNK,
            "preserve_aspect_ratio": y.PRESERVE_ASPECT_RATIO,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------------------------------
    def preprocess_image(self, batched_inputs: List[Dict]):
        """
        Resizes every image to S x S (bilinear, align_corners=False, no antialiasing) and
        normalises it, as the reference's ``FastBaseTransform``; with ``preserve_aspect_ratio``
        see :meth:`preprocess_image_keeping_aspect`.

        Returns:
            Tensor: (N, 3, S, S) float32 (an ``ImageList`` with ``preserve_aspect_ratio``).
        """
        if self.preserve_aspect_ratio:
            return self.preprocess_image_keeping_aspect(batched_inputs)
        size = (self.input_size, self.input_size)
        images = []
        for x in batched_inputs:
            image = x["image"].to(self.device, non_blocking=True).float()[None]
            if tuple(image.shape[-2:]) != size:
                image = self.resize_to_input(image)
            images.append(image)
        return self.normalize(torch.cat(images))

    def preprocess_image_keeping_aspect(self, batched_inputs: List[Dict]) -> ImageList:
        """
        The aspect-ratio-preserving input: each image resized (bilinear, align_corners=False,
        no antialiasing) to :func:`~yolact_d2.layers.input_size.aspect_preserving_size` (the
        longest side S), normalised, and placed at the top left of a zero (= mean pixel) canvas
        of the batch's padded size (:func:`~yolact_d2.layers.input_size.batch_input_size`).

        Returns:
            ImageList: ``tensor`` (N, 3, H, W) float32, ``image_sizes`` the resized (h, w) of
            each image (the part of the input it covers).
        """
        images, sizes = [], []
        for x in batched_inputs:
            image = x["image"].to(self.device, non_blocking=True).float()[None]
            size = aspect_preserving_size(image.shape[-2], image.shape[-1], self.input_size)
            if tuple(image.shape[-2:]) != size:
                image = F.interpolate(image, size, mode="bilinear", align_corners=False)
            images.append(self.normalize(image)[0])
            sizes.append(size)
        height, width = batch_input_size(sizes, self.input_size)
        batch = images[0].new_zeros((len(images), images[0].shape[0], height, width))
        for canvas, image in zip(batch, images):
            canvas[:, : image.shape[1], : image.shape[2]].copy_(image)
        return ImageList(batch, sizes)

    def resize_to_input(self, images: torch.Tensor) -> torch.Tensor:
        """
        The reference's square resize (bilinear, align_corners=False, no antialiasing); on an
        image that is already S x S it is the identity, bit for bit.

        Args:
            images (Tensor): (N, 3, H, W) float.

        Returns:
            Tensor: (N, 3, S, S).
        """
        size = (self.input_size, self.input_size)
        return F.interpolate(images, size, mode="bilinear", align_corners=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) float pixels in ``input_format`` order -> normalised network input."""
        return (images - self.pixel_mean) / self.pixel_std

    def _fast_cpu_path(self, images: torch.Tensor) -> bool:
        return self.fast_cpu_inference and not self.training and images.device.type == "cpu"

    def _autocast(self, images: torch.Tensor):
        if self._fast_cpu_path(images) and self.fast_cpu_dtype is not None:
            return torch.autocast("cpu", dtype=self.fast_cpu_dtype)
        return contextlib.nullcontext()

    def _networks(self, images: torch.Tensor):
        """
        The (backbone, head, protonet) that :meth:`predict` runs: the model's own, or on the
        fast CPU path inference copies with BatchNorm folded into the convs and channels_last
        weights (rebuilt automatically when the weights change).
        """
        if self._fast_cpu_path(images):
            return self._inference_copy.get(self.backbone, self.head, self.mask_branch.protonet)
        return self.backbone, self.head, self.mask_branch.protonet

    def predict(self, images) -> Dict[str, torch.Tensor]:
        """
        Runs the network on normalised S x S images (stages "backbone_fpn", "head",
        "protonet", then the start of "decode").

        Args:
            images (Tensor or ImageList): (N, 3, S, S), or the padded batch of
                :meth:`preprocess_image_keeping_aspect` (any H x W).

        On CPU at inference, batches larger than ``cpu_inference_chunk`` images run through the
        network in chunks of that many (the outputs are the same as one call's): large
        activations fall out of the caches, and with NCHW convs oneDNN's layout reorders grow
        with them; R50-550 fp32 on 2 cores took 652 ms per image at batch 8 in one call, 360 at
        batch 1.

        Returns:
            dict with "features" (dict of FPN maps), "class_logits" (N, R, C + 1),
            "box_deltas" (N, R, 4), "coefficients" (N, R, k), "prototypes" (N, k, h, w),
            "priors" (R, 4) relative to the input, "input_size" (H, W) of the input; for an
            ``ImageList`` also "content_sizes", its ``image_sizes``.
        """
        content_sizes = None
        if isinstance(images, ImageList):
            content_sizes, images = list(images.image_sizes), images.tensor
        chunk = self.cpu_inference_chunk
        if chunk > 0 and len(images) > chunk and images.device.type == "cpu" and not self.training:
            parts = [self._predict(images[i : i + chunk]) for i in range(0, len(images), chunk)]
            outputs = _concatenate_predictions(parts)
        else:
            outputs = self._predict(images)
        if content_sizes is not None:
            outputs["content_sizes"] = content_sizes
        return outputs

    def _predict(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """:meth:`predict` on one network call."""
        backbone, head, protonet = self._networks(images)
        if self._fast_cpu_path(images):
            with stage("preprocess"):
                images = images.contiguous(memory_format=torch.channels_last)
        with self._autocast(images):
            with stage("backbone_fpn"):
                features = backbone(images)
            with stage("head"):
                head_features = [features[f] for f in self.head_in_features]
                class_logits, box_deltas, coefficients = head(head_features)
            with stage("protonet"):
                prototypes = self.mask_branch(features, protonet)
        with stage("decode"):
            input_size = (images.shape[-2], images.shape[-1])
            priors = self.prior_generator(
                [f.shape[-2:] for f in head_features], images.device, input_size
            )
            return {
                "input_size": input_size,
                "features": features,
                "class_logits": class_logits.float(),
                "box_deltas": box_deltas.float(),
                "coefficients": coefficients.float(),
                "prototypes": prototypes.float().contiguous(),
                "priors": priors,
            }

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs (list[dict]): Detectron2 model inputs; in training each dict has
                "instances" (gt_boxes in pixels of the S x S image, gt_classes, gt_masks) and
                optionally "crowd_boxes" (M, 4) pixel XYXY boxes of crowd regions.

        Returns:
            dict[str, Tensor] of losses in training; otherwise list[dict] with "instances".
        """
        if self.preserve_aspect_ratio and not self.training and len(batched_inputs) > 1:
            return self._forward_inference_by_shape(batched_inputs)
        with stage("preprocess"):
            images = self.preprocess_image(batched_inputs)
        outputs = self.predict(images)
        if self.training:
            return self.forward_training(outputs, batched_inputs)
        return self.forward_inference(outputs, batched_inputs)

    def _forward_inference_by_shape(self, batched_inputs: List[Dict]) -> List[Dict]:
        """
        Inference keeping the aspect ratio: the images of one padded input size run as one
        batch (frames of a video are one), images of different sizes as separate ones, so that
        every image's content covers a whole number of prototype pixels of its input and its
        masks are pasted exactly (:func:`~yolact_d2.modeling.paste.detections_in_content`).
        """
        groups: Dict[Tuple[int, int], List[int]] = {}
        for i, x in enumerate(batched_inputs):
            height, width = x["image"].shape[-2:]
            size = aspect_preserving_size(height, width, self.input_size)
            groups.setdefault(padded_input_size(*size, self.input_size), []).append(i)
        results: List[Optional[Dict]] = [None] * len(batched_inputs)
        for indices in groups.values():
            group = [batched_inputs[i] for i in indices]
            with stage("preprocess"):
                images = self.preprocess_image(group)
            for i, result in zip(indices, self.forward_inference(self.predict(images), group)):
                results[i] = result
        return results

    def forward_training(
        self, outputs: Dict[str, torch.Tensor], batched_inputs: List[Dict]
    ) -> Dict[str, torch.Tensor]:
        """
        The losses: matching, class, box and mask losses on the predictions, then the mask
        branch's semantic-segmentation logits and (YOLACT++) mask-IoU predictions with theirs.

        Returns:
            dict[str, Tensor]: "loss_cls", "loss_box", "loss_mask", "loss_semantic_seg" (when
            its weight is not 0) and "loss_maskiou" (YOLACT++).
        """
        if self.loss is None:
            raise RuntimeError("this Yolact was built without a loss and cannot train")
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        if self.preserve_aspect_ratio:
            gt_instances = [_pad_instances(gt, outputs["input_size"]) for gt in gt_instances]
        crowd_boxes = [
            x.get("crowd_boxes", torch.zeros((0, 4))).to(self.device) for x in batched_inputs
        ]
        losses, maskiou_inputs = self.loss(outputs, gt_instances, crowd_boxes)
        branch = self.mask_branch
        if branch.semantic_seg_conv is not None:
            logits = branch.semantic_seg_logits(outputs["features"])
            losses["loss_semantic_seg"] = self.loss.semantic_seg(logits, gt_instances)
        if branch.maskiou_net is not None:
            predicted = branch.mask_iou(maskiou_inputs["masks"])
            losses["loss_maskiou"] = self.loss.maskiou(predicted, maskiou_inputs)
        return losses

    def forward_inference(
        self, outputs: Dict[str, torch.Tensor], batched_inputs: List[Dict]
    ) -> List[Dict[str, Instances]]:
        """
        Returns:
            list[dict]: {"instances": Instances} per image, at its original ("height",
            "width") size (the network input's size when not given).
        """
        image_sizes = [
            (x.get("height", x["image"].shape[-2]), x.get("width", x["image"].shape[-1]))
            for x in batched_inputs
        ]
        return [{"instances": r} for r in self.postprocess(outputs, image_sizes)]

    def postprocess(
        self,
        outputs: Dict[str, torch.Tensor],
        image_sizes: Sequence[Tuple[int, int]],
        until: str = "instances",
    ) -> List:
        """
        YOLACT's inference after the network, as the reference's ``Detect`` and
        ``postprocess``, with this model's settings: :func:`~yolact_d2.modeling.postprocessing.
        postprocess_predictions`, the one composition of its stages ("decode", "nms",
        "mask_assembly", "paste"), which the model's own inference, the exported graph, the
        predictor of exported networks, the prototype view, the calibration of random weights
        and the benchmark all run.

        Args:
            outputs (dict): from :meth:`predict`.
            image_sizes (list[tuple[int, int]]): original (H, W) of each image of the batch.
            until (str): the last stage (:data:`POSTPROCESS_STAGES`), see
                :func:`~yolact_d2.modeling.postprocessing.postprocess_predictions`.

        Returns:
            list: one dict (or ``Instances``) per image.
        """
        return postprocess_predictions(
            outputs,
            image_sizes,
            self.postprocess_settings,
            self._nms,
            self.box_variances,
            self.mask_branch.maskiou_net,
            until,
        )


def _concatenate_predictions(parts: List[Dict]) -> Dict:
    """The outputs of :meth:`Yolact.predict` on consecutive chunks of a batch, as one call's."""
    first = parts[0]
    out = {"priors": first["priors"], "input_size": first["input_size"]}
    out["features"] = {k: torch.cat([p["features"][k] for p in parts]) for k in first["features"]}
    for key in ("class_logits", "box_deltas", "coefficients", "prototypes"):
        out[key] = torch.cat([p[key] for p in parts])
    return out


def _pad_instances(gt: Instances, input_size: Tuple[int, int]) -> Instances:
    """
    Ground truth of an image resized keeping its aspect ratio, on the padded input: the same
    boxes (pixels from the top left) and classes, masks padded with background.
    """
    height, width = input_size
    padded = Instances((height, width))
    for name, value in gt.get_fields().items():
        if name == "gt_masks":
            masks = value.tensor
            value = BitMasks(
                F.pad(masks, (0, width - masks.shape[-1], 0, height - masks.shape[-2]))
            )
        padded.set(name, value)
    return padded
