# Copyright (c) yolact_d2 contributors.
"""
Detectron2's checkpointer with what YOLACT training needs on top: torchvision ResNet weights,
explicit re-initialisation of the class-dependent layers when fine-tuning to a different number
of classes, clear errors for unusable files, unreachable URLs and weights of another
architecture, and atomic saves.
"""

import logging
import numpy as np
import os
from collections.abc import Mapping
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlparse

import torch
from fvcore.common.checkpoint import _strip_prefix_if_present
from iopath.common.file_io import HTTPURLHandler, OneDrivePathHandler, get_cache_dir

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import Detectron2Handler

from yolact_d2.checkpoint.architecture import describe_yolact_d2_state_dict
from yolact_d2.checkpoint.key_names import backbone_file_type, convert_backbone_state_dict
from yolact_d2.checkpoint.loading import first_line
from yolact_d2.modeling.mask_branch import upgrade_legacy_keys
from yolact_d2.modeling.maskiou import MaskIoUNet
from yolact_d2.utils.file_io import atomic_open

__all__ = [
    "CLASS_DEPENDENT_LAYERS",
    "OFFLINE_WEIGHTS_DOCS",
    "WeightsError",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "YolactCheckpointer",
    "non_finite_entries",
    "url_cache_path",
]

logger = logging.getLogger(__name__)

# Layers whose output size depends on MODEL.YOLACT.NUM_CLASSES: the head's class logits
# (A * (C + 1) channels), the training-only semantic-segmentation conv (C) and YOLACT++'s last
# mask-IoU conv (C). They are the only ones re-initialised when fine-tuning to another C.
CLASS_DEPENDENT_LAYERS = (
    "head.cls_score",
    "mask_branch.semantic_seg_conv",
    f"mask_branch.maskiou_net.{MaskIoUNet.CLASS_LAYER}",
)

# Where the ImageNet backbone lives in a YOLACT model.
_BOTTOM_UP = "backbone.bottom_up."
# The parts of a YOLACT model that hold weights; a checkpoint with all three is a full YOLACT one.
_YOLACT_PARTS = ("backbone.", "head.", "mask_branch.")
# Trained only for its loss (MODEL.YOLACT.LOSS.SEMANTIC_SEG_WEIGHT > 0); inference never runs it.
_TRAINING_ONLY = "mask_branch.semantic_seg_conv."
# BatchNorm's counter: in BatchNorm2d, not in FrozenBatchNorm2d (which drops it when loading).
_COUNTER = "num_batches_tracked"

# What users without network access read (docs/GETTING_STARTED.md).
OFFLINE_WEIGHTS_DOCS = "docs/GETTING_STARTED.md#imagenet-weights-and-offline-clusters"


class WeightsError(ValueError):
    """
    Weights (``MODEL.WEIGHTS``, or the file given to :meth:`YolactCheckpointer.load`) that cannot
    be loaded into the model: not a checkpoint, a reference checkpoint to convert first, a URL
    that cannot be downloaded, weights of another architecture. The message is one line naming
    the file or URL and what to do; ``train_net.py`` prints it as one ``error:`` line and exits
    with code 2 (:func:`yolact_d2.engine.cli.exit_on_input_error`).
    """


class WeightsUnavailableError(WeightsError):
    """A URL that cannot be downloaded (offline, unreachable, HTTP error) and is not cached."""


class WeightsMismatchError(WeightsError):
    """A full YOLACT checkpoint whose architecture is not the model's (see
    ``MODEL.YOLACT.ALLOW_WEIGHTS_MISMATCH``)."""


def url_cache_path(url: str) -> Optional[str]:
    """
    The local file that Detectron2's ``PathManager`` (iopath's ``HTTPURLHandler``) reads for
    ``url`` instead of downloading it, when the file is there: the cache directory
    (``$FVCORE_CACHE``, default ``~/.torch/iopath_cache``, or iopath's fallback in the temporary
    directory when that is not writable), then the URL's path without the host, e.g.
    ``https://download.pytorch.org/models/resnet50-19c8e357.pth`` ->
    ``~/.torch/iopath_cache/models/resnet50-19c8e357.pth``. ``detectron2://`` and OneDrive URLs
    are first mapped to the URL they download, and the query is dropped, as
    :meth:`DetectionCheckpointer.load` does.

    Returns:
        str or None: None for paths that are not downloaded, and for file names longer than
        iopath's limit (it then caches them under a random name).
    """
    url = urlparse(url)._replace(query="").geturl()
    if url.startswith(Detectron2Handler.PREFIX):
        url = Detectron2Handler.S3_DETECTRON2_PREFIX + url[len(Detectron2Handler.PREFIX) :]
    elif url.startswith(OneDrivePathHandler.ONE_DRIVE_PREFIX):
        url = OneDrivePathHandler().create_one_drive_direct_download(url)
    if not url.startswith(tuple(HTTPURLHandler()._get_supported_prefixes())):
        return None
    # As HTTPURLHandler._get_local_path: the directory from the parsed path, the name from the
    # whole URL.
    filename = url.split("/")[-1]
    if not filename or len(filename) > HTTPURLHandler.MAX_FILENAME_LEN:
        return None
    directory = os.path.dirname(urlparse(url).path.lstrip("/"))
    return os.path.join(get_cache_dir(), directory, filename)


def _unavailable_error(url: str, error: BaseException) -> WeightsUnavailableError:
    cached = url_cache_path(url)
    if cached:
        what_to_do = (
            f"put the file at {cached!r} (Detectron2 reads it there instead of downloading: "
            "$FVCORE_CACHE, default ~/.torch/iopath_cache, then the URL's path) or give a local "
            "file: MODEL.WEIGHTS /local/path.pth"
        )
    else:
        what_to_do = "give a local copy of the file: MODEL.WEIGHTS /local/path.pth"
    return WeightsUnavailableError(
        f"cannot download the weights {url!r} ({first_line(error)}). Without network access, "
        f"{what_to_do}. See {OFFLINE_WEIGHTS_DOCS}"
    )


def _is_original_yolact(state_dict: Mapping) -> bool:
    """Whether ``state_dict`` is an unconverted dbolya/yolact checkpoint (plain state dict)."""
    prefixes = ("proto_net.", "prediction_layers.", "fpn.lat_layers.")
    return any(k.startswith(prefixes) for k in state_dict)


class YolactCheckpointer(DetectionCheckpointer):
    """
    A :class:`DetectionCheckpointer` for YOLACT models. ``MODEL.WEIGHTS`` (or ``load(path)``)
    accepts:

    * Detectron2 ``.pkl`` files: ImageNet backbones from the Detectron2 model zoo (Caffe2 names)
      or from ``convert-torchvision-to-d2.py``; Detectron2's name-matching heuristics put them
      under ``backbone.bottom_up``;
    * the ImageNet backbone files the reference trains from: torchvision ResNet state dicts
      (``resnet50-19c8e357.pth``, ``resnet101-5d3b4d8f.pth``, the reference's
      ``resnet101_reducedfc.pth``, or ``torchvision.models.resnet50().state_dict()``) and the
      reference's ``darknet53.pth``, local or by URL (downloaded once and cached by Detectron2's
      ``PathManager`` under ``$FVCORE_CACHE``, default ``~/.torch/iopath_cache``): renamed
      explicitly onto ``backbone.bottom_up`` as the reference's ``init_backbone`` does (see
      :func:`~yolact_d2.checkpoint.key_names.convert_backbone_state_dict`), the classifier
      dropped;
    * converted YOLACT checkpoints (a dict with "model" in Detectron2 names, ``.pth`` or ``.pkl``);
    * Detectron2 training checkpoints (model, optimizer, scheduler, iteration), for resuming.

    When the checkpoint was trained with another number of classes, the layers in
    :data:`CLASS_DEPENDENT_LAYERS` keep their fresh initialisation (logged). The training-only
    semantic-segmentation conv is skipped (logged at INFO) when the model has none
    (``MODEL.YOLACT.LOSS.SEMANTIC_SEG_WEIGHT 0``), and keeps its initialisation when the
    checkpoint has none. Any other difference between a full YOLACT checkpoint and the model
    (other backbone, priors, prototypes, YOLACT vs YOLACT++) raises :class:`WeightsMismatchError`
    naming both architectures, unless ``allow_mismatch``: then only the tensors whose names and
    shapes match are loaded, with a warning.

    A missing file raises FileNotFoundError naming it; a file that is not a checkpoint raises a
    :class:`WeightsError` naming it; a URL that cannot be downloaded raises
    :class:`WeightsUnavailableError` naming the URL and the file of the local cache that would
    serve it.

    :meth:`save` writes atomically: an interrupted save leaves neither a partial checkpoint nor a
    ``last_checkpoint`` pointing at one.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        save_dir: str = "",
        *,
        allow_mismatch: Optional[bool] = None,
        **kwargs,
    ):
        """
        Args:
            model, save_dir, kwargs: as :class:`DetectionCheckpointer` (``save_to_disk`` and the
                checkpointables).
            allow_mismatch (bool, optional): load a full YOLACT checkpoint of another
                architecture (what fits, with a warning) instead of raising
                :class:`WeightsMismatchError`. None: ``MODEL.YOLACT.ALLOW_WEIGHTS_MISMATCH`` of
                the config of the ``trainer`` checkpointable (``YolactTrainer`` and Detectron2's
                trainers pass themselves), False without one.
        """
        super().__init__(model, save_dir, **kwargs)
        self.allow_mismatch = allow_mismatch
        self._loading = None

    # ------------------------------------------------------------------------------------------
    # Loading
    # ------------------------------------------------------------------------------------------
    def load(self, path, *args, **kwargs):
        """
        Same as :meth:`DetectionCheckpointer.load`, with clear errors for a missing file and for a
        URL that cannot be downloaded.
        """
        if path and not urlparse(path).scheme:
            local_path = path.split("?", 1)[0]
            if not os.path.isfile(local_path):
                raise FileNotFoundError(f"Checkpoint file '{local_path}' does not exist.")
        elif path and url_cache_path(path) is not None:
            try:  # downloads once into the cache, where DetectionCheckpointer.load then finds it
                self.path_manager.get_local_path(urlparse(path)._replace(query="").geturl())
            except OSError as e:  # URLError, HTTPError, timeouts, refused connections
                raise _unavailable_error(path, e) from e
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            # DetectionCheckpointer only resets this after a successful load; without the reset
            # a failed load would make every later load() fail its assertion.
            self._parsed_url_during_load = None
            self._loading = None

    def _load_file(self, filename: str):
        try:
            loaded = super()._load_file(filename)
        except Exception as e:
            raise WeightsError(
                f"Cannot read '{filename}' as a checkpoint ({first_line(e)})."
            ) from e
        model_state = loaded.get("model") if isinstance(loaded, Mapping) else None
        if not _is_state_dict(model_state):
            raise WeightsError(
                f"'{filename}' is not a checkpoint: expected a state dict (name -> tensor) or a "
                f"dict with a 'model' state dict, got {type(loaded).__name__}."
            )
        if _is_original_yolact(model_state):
            raise WeightsError(
                f"'{filename}' is an original dbolya/yolact checkpoint; convert it first: "
                f"python tools/convert_yolact_weights.py {filename} <output>.pth"
            )
        # The "module." of (Distributed)DataParallel, removed as fvcore's loader removes it.
        _strip_prefix_if_present(model_state, "module.")
        backbone_type = backbone_file_type(model_state)
        if backbone_type is not None:
            return self._from_backbone_file(filename, model_state, backbone_type)
        return loaded

    def _from_backbone_file(self, filename: str, state_dict: Dict, backbone_type: str) -> Dict:
        renamed, dropped = convert_backbone_state_dict(state_dict, backbone_type)
        model_keys = self.model.state_dict().keys()
        unused = sorted(k for k in renamed if k not in model_keys)
        renamed = {k: v for k, v in renamed.items() if k in model_keys}
        kind = "torchvision ResNet" if backbone_type == "resnet" else "DarkNet-53"
        if not renamed:
            raise WeightsError(
                f"'{filename}' holds {kind} ImageNet weights, but none of them fits this model's "
                "backbone; check MODEL.BACKBONE.NAME and MODEL.RESNETS.DEPTH against the weights."
            )
        self.logger.info(
            f"Loading {kind} ImageNet weights from '{filename}': {len(renamed)} tensors into "
            f"{_BOTTOM_UP.rstrip('.')}; dropped {dropped}"
            + (f"; no slot in the model for {unused}" if unused else "")
        )
        if backbone_type == "resnet":
            _warn_if_stride_in_1x1(self.model)
        return {"model": renamed, "__author__": backbone_type, "matching_heuristics": False}

    def _load_model(self, checkpoint):
        _strip_prefix_if_present(checkpoint["model"], "module.")
        # (before the class-dependent layers are looked up under their current names)
        moved = upgrade_legacy_keys(checkpoint["model"])
        if moved:
            self.logger.info(
                f"Checkpoint of an earlier yolact_d2: {len(moved)} tensors of protonet, "
                "semantic_seg_conv and maskiou_net loaded into mask_branch.*"
            )
        model_state = self.model.state_dict()
        not_in_checkpoint = self._match_training_only_layer(checkpoint["model"], model_state)
        if _is_full_yolact(checkpoint["model"]):
            self._check_architecture(checkpoint["model"], model_state)
        reinitialised = _drop_class_dependent_mismatches(checkpoint["model"], model_state)
        if reinitialised:
            layers = ", ".join(
                f"{n} (checkpoint {old}, model {new})" for n, old, new in reinitialised
            )
            self.logger.info(
                "The checkpoint has a different number of classes; re-initialised the "
                f"class-dependent layers: {layers}"
            )
        incompatible = super()._load_model(checkpoint)
        for key in not_in_checkpoint:  # reported above, at INFO
            if key in incompatible.missing_keys:
                incompatible.missing_keys.remove(key)
        return incompatible

    def _match_training_only_layer(self, checkpoint_state: Dict, model_state: Mapping) -> List[str]:
        """
        The training-only semantic-segmentation conv: removed from ``checkpoint_state`` when the
        model has none, reported when only the model has it (it keeps its initialisation).

        Returns:
            list[str]: the model's keys of the conv that the checkpoint lacks.
        """
        in_checkpoint = [k for k in checkpoint_state if k.startswith(_TRAINING_ONLY)]
        in_model = [k for k in model_state if k.startswith(_TRAINING_ONLY)]
        layer = _TRAINING_ONLY.rstrip(".")
        if in_checkpoint and not in_model:
            for key in in_checkpoint:
                del checkpoint_state[key]
            self.logger.info(
                f"Not loading the checkpoint's {layer}: this model has none "
                "(MODEL.YOLACT.LOSS.SEMANTIC_SEG_WEIGHT 0); it only trains the semantic "
                "segmentation loss, inference never runs it."
            )
        if in_model and not in_checkpoint and _is_full_yolact(checkpoint_state):
            self.logger.info(
                f"The checkpoint has no {layer} (it only trains the semantic segmentation loss); "
                "it keeps its initialisation."
            )
            return in_model
        return []

    def _mismatch_allowed(self) -> bool:
        if self.allow_mismatch is not None:
            return bool(self.allow_mismatch)
        try:
            cfg = getattr(self.checkpointables.get("trainer"), "cfg", None)
        except ReferenceError:  # a weakref.proxy to a trainer that no longer exists
            cfg = None
        if cfg is None:
            return False
        return bool(cfg.MODEL.YOLACT.get("ALLOW_WEIGHTS_MISMATCH", False))

    def _check_architecture(self, checkpoint_state: Mapping, model_state: Mapping) -> None:
        """
        Raises :class:`WeightsMismatchError` (or warns, when allowed) if the full YOLACT checkpoint
        has other keys or shapes than the model, apart from the class-dependent layers' shapes,
        BatchNorm counters and the training-only conv.
        """
        missing, unexpected, shapes = _architecture_differences(checkpoint_state, model_state)
        if not (missing or unexpected or shapes):
            return
        source = f"'{self._loading}'" if self._loading else "The checkpoint"
        ours = describe_yolact_d2_state_dict(model_state)
        theirs = describe_yolact_d2_state_dict(checkpoint_state)
        details = _differences_text(missing, unexpected, shapes)
        if not self._mismatch_allowed():
            raise WeightsMismatchError(
                f"{source} holds {theirs} weights, but the config builds {ours}: {details}. Use "
                "the config of these weights, or set MODEL.YOLACT.ALLOW_WEIGHTS_MISMATCH True "
                "to load only the tensors whose names and shapes match."
            )
        self.logger.warning(
            f"MODEL.YOLACT.ALLOW_WEIGHTS_MISMATCH: loading {source} ({theirs} weights) into "
            f"{ours}; only the tensors whose names and shapes match are loaded, the others keep "
            f"their initialisation: {details}."
        )

    # ------------------------------------------------------------------------------------------
    # Saving
    # ------------------------------------------------------------------------------------------
    def save(self, name: str, **kwargs) -> None:
        """
        Same as fvcore's :meth:`Checkpointer.save`, but the file is written to a temporary file
        in the same directory and renamed into place, and only then tagged in
        ``last_checkpoint`` (itself replaced atomically).
        """
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        bad = non_finite_entries(data)
        if bad:
            raise FloatingPointError(
                f"not saving checkpoint {name!r}: {len(bad)} tensor(s) hold NaN or Inf "
                f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''})"
            )
        if urlparse(self.save_dir).scheme:  # not a local directory: no atomic rename
            super().save(name, **kwargs)
            return
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        with atomic_open(save_file) as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if urlparse(self.save_dir).scheme:
            super().tag_last_checkpoint(last_filename_basename)
            return
        with atomic_open(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(last_filename_basename)


def non_finite_entries(obj, prefix: str = "") -> List[str]:
    """
    The paths (e.g. "model/head.cls_score.weight", "optimizer/state/3/momentum_buffer") of the
    floating-point tensors in a nested checkpoint structure that hold NaN or Inf.
    """
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            return [] if bool(torch.isfinite(obj).all()) else [prefix or "<tensor>"]
        return []
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return []
    found = []
    for key, value in items:
        found += non_finite_entries(value, f"{prefix}/{key}" if prefix else str(key))
    return found


def _is_full_yolact(state_dict: Mapping) -> bool:
    """Whether ``state_dict`` holds a whole YOLACT (backbone, head, mask branch), not a part."""
    return all(any(k.startswith(part) for k in state_dict) for part in _YOLACT_PARTS)


def _architecture_differences(
    checkpoint_state: Mapping, model_state: Mapping
) -> Tuple[List[str], List[str], List[Tuple[str, tuple, tuple]]]:
    """
    How a full YOLACT checkpoint's weights differ from the model's, apart from the shapes of
    :data:`CLASS_DEPENDENT_LAYERS` (re-initialised), BatchNorm counters and the training-only
    conv (see :meth:`YolactCheckpointer._match_training_only_layer`).

    Returns:
        tuple[list[str], list[str], list[tuple[str, tuple, tuple]]]: the model's keys missing
        from the checkpoint, the checkpoint's keys the model lacks, and (key, checkpoint shape,
        model shape) of the keys of both with other shapes.
    """

    def weights(state: Mapping) -> Dict:
        return {
            k: v
            for k, v in state.items()
            if k.startswith(_YOLACT_PARTS) and not k.endswith(_COUNTER)
        }

    ckpt, model = weights(checkpoint_state), weights(model_state)
    class_dependent = tuple(layer + "." for layer in CLASS_DEPENDENT_LAYERS)
    missing = [k for k in model if k not in ckpt and not k.startswith(_TRAINING_ONLY)]
    unexpected = [k for k in ckpt if k not in model]
    shapes = [
        (k, tuple(ckpt[k].shape), tuple(model[k].shape))
        for k in model
        if k in ckpt
        and tuple(ckpt[k].shape) != tuple(model[k].shape)
        and not k.startswith(class_dependent)
    ]
    return missing, unexpected, shapes


def _differences_text(
    missing: List[str], unexpected: List[str], shapes: List[Tuple[str, tuple, tuple]]
) -> str:
    """
    The differences, those of each kind that occur, with the first key of each: e.g. "255 of the
    model's tensors are not in the file (e.g. backbone.bottom_up.res4.6.conv1.weight)".
    """
    parts = []
    if missing:
        parts.append(
            f"{len(missing)} of the model's tensors are not in the file (e.g. {missing[0]})"
        )
    if unexpected:
        parts.append(f"{len(unexpected)} of the file's are not in the model (e.g. {unexpected[0]})")
    if shapes:
        key, theirs, ours = shapes[0]
        parts.append(
            f"{len(shapes)} have another shape (e.g. {key}: {theirs} in the file, {ours} in the "
            "model)"
        )
    return ", ".join(parts)


def _is_state_dict(obj) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in obj.values())
    )


def _drop_class_dependent_mismatches(
    checkpoint_state: Dict, model_state: Mapping
) -> List[Tuple[str, tuple, tuple]]:
    """
    Removes from ``checkpoint_state`` (in place) the tensors of the class-dependent layers whose
    shape differs from the model's, so the model keeps their fresh initialisation.

    Returns:
        list[tuple[str, tuple, tuple]]: (layer, checkpoint weight shape, model weight shape) of
        each such layer.
    """
    dropped = []
    for layer in CLASS_DEPENDENT_LAYERS:
        keys = [k for k in model_state if k.startswith(layer + ".") and k in checkpoint_state]
        if all(tuple(checkpoint_state[k].shape) == tuple(model_state[k].shape) for k in keys):
            continue
        weight = f"{layer}.weight"
        old_shape = tuple(checkpoint_state[weight].shape) if weight in checkpoint_state else None
        dropped.append((layer, old_shape, tuple(model_state[weight].shape)))
        for k in keys:
            del checkpoint_state[k]
    return dropped


def _warn_if_stride_in_1x1(model: torch.nn.Module) -> None:
    """torchvision ResNets stride in the 3x3 conv; warn if the model strides in the 1x1."""
    block = dict(model.named_modules()).get(_BOTTOM_UP + "res3.0.conv1")
    if block is not None and tuple(block.stride) != (1, 1) and block.kernel_size == (1, 1):
        logger.warning(
            "Loading torchvision weights into a ResNet with MODEL.RESNETS.STRIDE_IN_1X1=True; "
            "torchvision ResNets need STRIDE_IN_1X1=False."
        )
