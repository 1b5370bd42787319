# Copyright (c) yolact_d2 contributors.
"""
YOLACT training on Detectron2's :class:`DefaultTrainer`: YOLACT's data, COCO evaluation with
YOLACT++ mask scores, CPU multi-process training, bf16 on CPU, skipped non-finite steps and the
reference's batch-size autoscaling.
"""

import contextlib
import logging
import math
import os
import time
import weakref
from typing import List, Optional

import torch
import torch.distributed as dist

from detectron2.data import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.utils import comm
from detectron2.utils.events import (
    CommonMetricPrinter,
    JSONWriter,
    TensorboardXWriter,
    get_event_storage,
)
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import setup_logger

from yolact_d2.checkpoint.checkpointer import YolactCheckpointer
from yolact_d2.data import YolactDatasetMapper, validate_training_data
from yolact_d2.engine.optimizer import build_yolact_optimizer, full_model_max_grad_norm
from yolact_d2.evaluation import YolactCOCOEvaluator
from yolact_d2.layers.batch_norm import freeze_batch_norm

__all__ = [
    "YolactTrainer",
    "YolactSimpleTrainer",
    "YolactAMPTrainer",
    "apply_yolact_autoscale",
    "apply_reference_batch_norm_rule",
    "batch_norm_images_per_iteration",
    "warn_if_untrained_start",
]

logger = logging.getLogger(__name__)

# The batch size the reference's schedule (lr 1e-3, 800k iterations) is written for.
REFERENCE_BATCH_SIZE = 8
# MODEL.RESNETS.NORM values whose statistics are computed over the images of all processes.
_SYNCHRONISED_NORMS = ("SyncBN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N")


def apply_yolact_autoscale(cfg):
    """
    The reference's ``--autoscale`` rule, enabled by ``SOLVER.YOLACT_AUTOSCALE``: when
    ``SOLVER.IMS_PER_BATCH`` = b differs from 8, multiply ``BASE_LR`` by b / 8 and floor-divide
    ``MAX_ITER`` and ``STEPS`` by b / 8. The warm-up is not scaled (as in the reference).

    It is an alternative to Detectron2's ``SOLVER.REFERENCE_WORLD_SIZE`` (which scales with the
    number of processes); enabling both is an error.

    Args:
        cfg (CfgNode): a full config.

    Returns:
        CfgNode: ``cfg`` itself when nothing changes, else a scaled copy (frozen if ``cfg`` is).
    """
    batch_size = cfg.SOLVER.IMS_PER_BATCH
    if not cfg.SOLVER.YOLACT_AUTOSCALE or batch_size == REFERENCE_BATCH_SIZE:
        return cfg
    if cfg.SOLVER.REFERENCE_WORLD_SIZE:
        raise ValueError(
            "SOLVER.YOLACT_AUTOSCALE and SOLVER.REFERENCE_WORLD_SIZE both rescale the schedule; "
            "enable only one of them."
        )
    factor = batch_size / REFERENCE_BATCH_SIZE
    frozen = cfg.is_frozen()
    cfg = cfg.clone()
    cfg.defrost()
    solver = cfg.SOLVER
    solver.BASE_LR = solver.BASE_LR * factor
    solver.MAX_ITER = int(solver.MAX_ITER // factor)
    solver.STEPS = tuple(int(step // factor) for step in solver.STEPS)
    if frozen:
        cfg.freeze()
    logger.info(
        f"SOLVER.YOLACT_AUTOSCALE: batch size {batch_size} = {factor:g} x {REFERENCE_BATCH_SIZE}; "
        f"BASE_LR={solver.BASE_LR:g}, MAX_ITER={solver.MAX_ITER}, STEPS={solver.STEPS} "
        f"(warm-up unchanged: {solver.WARMUP_ITERS} iterations)."
    )
    return cfg


def batch_norm_images_per_iteration(cfg, world_size: int) -> int:
    """
    How many images one BatchNorm layer normalises over in a training iteration:
    ``SOLVER.IMS_PER_BATCH / world_size`` (the images of one process) for plain BatchNorm, all
    of ``SOLVER.IMS_PER_BATCH`` for synchronised BatchNorm (``MODEL.RESNETS.NORM`` "SyncBN",
    "naiveSyncBN", ...).
    """
    if cfg.MODEL.RESNETS.NORM in _SYNCHRONISED_NORMS:
        return cfg.SOLVER.IMS_PER_BATCH
    return cfg.SOLVER.IMS_PER_BATCH // max(1, world_size)


def apply_reference_batch_norm_rule(cfg, model: torch.nn.Module, world_size: int) -> List[str]:
    """
    The reference's BatchNorm rule (dbolya/yolact ``train.py``): BatchNorm is frozen (running
    statistics used and kept, affine parameters not trained) when fewer than
    ``MODEL.YOLACT.FREEZE_BN_BELOW_BATCH`` (default 6, the reference's limit per GPU) images
    are normalised together, see :func:`batch_norm_images_per_iteration`. 0 disables the rule.
    Logged either way on the main process. Call it before the optimizer is built.

    Args:
        cfg (CfgNode): the training config.
        model (nn.Module): the model, not yet wrapped in DDP.
        world_size (int): the number of training processes.

    Returns:
        list[str]: the names of the frozen layers (empty when nothing was frozen).
    """
    limit = cfg.MODEL.YOLACT.FREEZE_BN_BELOW_BATCH
    images = batch_norm_images_per_iteration(cfg, world_size)
    if limit <= 0 or images >= limit:
        if limit > 0 and comm.is_main_process():
            logger.info(
                f"BatchNorm is trained: {images} images per BatchNorm per iteration "
                f"(MODEL.YOLACT.FREEZE_BN_BELOW_BATCH={limit})."
            )
        return []
    frozen = freeze_batch_norm(model)
    if frozen and comm.is_main_process():
        logger.warning(
            f"BatchNorm frozen in {len(frozen)} layers (running statistics used, affine "
            f"parameters not trained): each BatchNorm sees {images} image(s) per iteration "
            f"(SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} over {world_size} process(es), "
            f"MODEL.RESNETS.NORM={cfg.MODEL.RESNETS.NORM}), fewer than "
            f"MODEL.YOLACT.FREEZE_BN_BELOW_BATCH={limit}, as the reference does below 6 images "
            "per GPU. Set MODEL.YOLACT.FREEZE_BN_BELOW_BATCH 0 to train BatchNorm anyway "
            "(needed from random weights: see the *_scratch.yaml configs)."
        )
    return frozen


def warn_if_untrained_start(cfg) -> bool:
    """
    Logs one warning (main process) when training starts from random weights
    (``MODEL.WEIGHTS`` empty) with a config whose recipe is written for an ImageNet-pretrained
    backbone (``MODEL.YOLACT.PRETRAINED_RECIPE`` True, as every COCO config).

    Returns:
        bool: whether it warned.
    """
    if cfg.MODEL.WEIGHTS or not cfg.MODEL.YOLACT.PRETRAINED_RECIPE:
        return False
    if comm.is_main_process():
        logger.warning(
            "MODEL.WEIGHTS is empty: training starts from random weights, but this config's "
            "recipe (the reference's SGD schedule, BatchNorm frozen below "
            f"{cfg.MODEL.YOLACT.FREEZE_BN_BELOW_BATCH} images per BatchNorm) is written for an "
            "ImageNet-pretrained backbone and diverges from random weights. Set MODEL.WEIGHTS to "
            "the ImageNet backbone the config names (docs/GETTING_STARTED.md, 'ImageNet weights "
            "and offline clusters'), or "
            "train from scratch with configs/yolact_R_50_FPN_550_scratch.yaml (or "
            "yolact_R_101_FPN_550_scratch.yaml)."
        )
    return True


class YolactSimpleTrainer(SimpleTrainer):
    """
    :class:`SimpleTrainer` with two YOLACT-specific behaviours:

    * the optimizer step is skipped (with a warning, and the count put in the event storage as
      ``skipped_steps``) when the total loss is not finite on any rank, as the reference does;
      gradients are still computed so that all DDP ranks take part in the all-reduce, and the
      BatchNorm running statistics the failed forward changed are restored, so that a skipped
      step leaves the model exactly as it was; after ``max_nonfinite_steps`` consecutive
      skipped steps a :class:`FloatingPointError` stops training;
    * with ``bf16_cpu`` the forward runs under ``torch.autocast("cpu", dtype=torch.bfloat16)``;
    * with ``max_grad_norm`` the gradients of all parameters together are rescaled to at most
      that total L2 norm before the step (Detectron2's own clipping is per parameter); the norm
      before clipping is written to the event storage as ``grad_norm``.

    Subclasses change the precision handling through :meth:`autocast`, :meth:`backward` and
    :meth:`optimizer_step`.

    ``run_step`` is written here rather than extended: Detectron2's ``SimpleTrainer.run_step``
    offers no hook around the forward (for autocast) and none between the backward and the
    optimizer step that could cancel the step (``after_backward`` runs hooks but the step
    follows regardless), which the skipped non-finite steps and the total-norm clipping need.
    """

    def __init__(
        self,
        model,
        data_loader,
        optimizer,
        *,
        bf16_cpu: bool = False,
        max_grad_norm: Optional[float] = None,
        max_nonfinite_steps: int = 0,
    ):
        """
        Args:
            model, data_loader, optimizer: as in :class:`SimpleTrainer`.
            bf16_cpu (bool): run the forward under CPU bf16 autocast.
            max_grad_norm (float or None): clip the total gradient norm of the model to this.
            max_nonfinite_steps (int): ``SOLVER.MAX_NONFINITE_STEPS`` (0: never stop).
        """
        super().__init__(model, data_loader, optimizer)
        self.bf16_cpu = bf16_cpu
        self.max_grad_norm = max_grad_norm
        self.max_nonfinite_steps = max_nonfinite_steps
        self.num_skipped_steps = 0
        self.consecutive_skipped_steps = 0
        self._norm_buffers = [
            buffer
            for module in model.modules()
            if isinstance(module, torch.nn.modules.batchnorm._NormBase)
            for buffer in (module.running_mean, module.running_var, module.num_batches_tracked)
            if buffer is not None
        ]

    def autocast(self):
        """The context the forward runs in."""
        if self.bf16_cpu:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def backward(self, losses: torch.Tensor) -> None:
        losses.backward()

    def unscale_gradients(self) -> None:
        """Make the gradients true gradients of the loss (a no-op without loss scaling)."""

    def clip_gradients(self) -> None:
        """Clip the total gradient norm to ``max_grad_norm`` and record it as ``grad_norm``."""
        if self.max_grad_norm is None:
            return
        self.unscale_gradients()
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        norm = torch.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
        get_event_storage().put_scalar("grad_norm", float(norm))

    def optimizer_step(self) -> None:
        self.optimizer.step()

    def run_step(self):
        assert self.model.training, f"[{type(self).__name__}] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        self.optimizer.zero_grad()
        norm_state = [buffer.clone() for buffer in self._norm_buffers]
        with self.autocast():
            loss_dict = self.model(data)
        losses = sum(loss_dict.values())
        self.backward(losses)
        self.after_backward()
        if not self._finite_on_all_ranks(losses):
            with torch.no_grad():
                for buffer, saved in zip(self._norm_buffers, norm_state):
                    buffer.copy_(saved)
            self._skip_step(loss_dict)
            return
        self.consecutive_skipped_steps = 0
        self._write_metrics(loss_dict, data_time)
        self.clip_gradients()
        self.optimizer_step()

    @staticmethod
    def _finite_on_all_ranks(losses: torch.Tensor) -> bool:
        finite = torch.isfinite(losses.detach()).to(torch.int32)
        if comm.get_world_size() > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item())

    def _skip_step(self, loss_dict) -> None:
        self.num_skipped_steps += 1
        self.consecutive_skipped_steps += 1
        values = {k: float(v.detach()) for k, v in loss_dict.items()}
        logger.warning(
            f"Non-finite loss at iteration {self.iter} (losses on this rank: {values}); skipping "
            f"the optimizer step ({self.num_skipped_steps} skipped so far)."
        )
        get_event_storage().put_scalar("skipped_steps", self.num_skipped_steps)
        if self.max_nonfinite_steps and self.consecutive_skipped_steps >= self.max_nonfinite_steps:
            terms = sorted(k for k, v in values.items() if not math.isfinite(v)) or [
                "(finite on this rank; non-finite on another)"
            ]
            raise FloatingPointError(
                f"training stopped at iteration {self.iter}: {self.consecutive_skipped_steps} "
                f"consecutive steps had a non-finite loss (SOLVER.MAX_NONFINITE_STEPS); "
                f"non-finite terms: {', '.join(terms)}"
            )


class YolactAMPTrainer(YolactSimpleTrainer, AMPTrainer):
    """
    :class:`YolactSimpleTrainer` with CUDA automatic mixed precision: Detectron2's
    :class:`AMPTrainer` provides the gradient scaler (and its checkpointed state); the forward
    runs under CUDA autocast and the step goes through the scaler.
    """

    def autocast(self):
        return torch.autocast("cuda", dtype=self.precision)

    def backward(self, losses: torch.Tensor) -> None:
        self.grad_scaler.scale(losses).backward()

    def unscale_gradients(self) -> None:
        self.grad_scaler.unscale_(self.optimizer)

    def optimizer_step(self) -> None:
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()


class YolactTrainer(DefaultTrainer):
    """
    :class:`DefaultTrainer` for YOLACT. It keeps Detectron2's hooks, checkpointing, resuming,
    evaluation and schedule (``WarmupMultiStepLR``), and changes:

    * data: :class:`YolactDatasetMapper` for training and testing;
    * evaluation: :class:`YolactCOCOEvaluator` on "bbox" and "segm";
    * checkpoints: :class:`YolactCheckpointer` (torchvision weights, class-count changes,
      atomic saves);
    * DDP: on CPU the model is wrapped without ``device_ids``, so ``launch`` with several gloo
      processes trains on CPU; ``find_unused_parameters`` follows
      ``SOLVER.YOLACT_DDP_FIND_UNUSED_PARAMETERS``;
    * the step: :class:`YolactSimpleTrainer` (non-finite steps skipped, ``SOLVER.BF16_CPU``) or,
      with ``SOLVER.AMP.ENABLED`` on CUDA, :class:`YolactAMPTrainer`;
    * BatchNorm: the reference's rule, frozen below ``MODEL.YOLACT.FREEZE_BN_BELOW_BATCH``
      images per BatchNorm (see :func:`apply_reference_batch_norm_rule`);
    * a warning when a recipe written for ImageNet weights starts from random ones
      (:func:`warn_if_untrained_start`);
    * ``SOLVER.CHANNELS_LAST``: the model's weights (and so its activations) in channels_last.

    The optimizer is SGD or AdamW (see :func:`build_yolact_optimizer`; with Base-YOLACT.yaml the
    reference's single SGD group) and the schedule Detectron2's ``SOLVER.LR_SCHEDULER_NAME``
    (Base-YOLACT.yaml: ``WarmupMultiStepLR``, whose ``WARMUP_FACTOR`` 0.1 over 500 iterations is
    the reference's linear warm-up).
    """

    def __init__(self, cfg):
        """
        Args:
            cfg (CfgNode): a full config.
        """
        # DefaultTrainer.__init__ hard-codes the DDP wrapping (device_ids, which CPU modules
        # reject: tests/test_train_net.py shows it failing on two CPU processes), the step trainer
        # and the checkpointer, with no hook for any of them, so it is replaced by this one; the
        # attributes it sets, and therefore all of DefaultTrainer's other methods, are the same.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = self.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        apply_reference_batch_norm_rule(cfg, model, comm.get_world_size())
        if cfg.SOLVER.CHANNELS_LAST:
            model.to(memory_format=torch.channels_last)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = self.build_ddp_model(cfg, model)
        self._trainer = self.build_step_trainer(cfg, model, data_loader, optimizer)

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = YolactCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume=True):
        """As :meth:`DefaultTrainer.resume_or_load`; warns if training starts untrained."""
        if not (resume and self.checkpointer.has_checkpoint()):
            warn_if_untrained_start(self.cfg)
        super().resume_or_load(resume=resume)

    def build_hooks(self):
        """
        Detectron2's hooks, with the metrics written every ``SOLVER.LOG_PERIOD`` iterations
        (Detectron2 fixes 20).
        """
        hook_list = super().build_hooks()
        for hook in hook_list:
            if isinstance(hook, hooks.PeriodicWriter):
                hook._period = self.cfg.SOLVER.LOG_PERIOD
        return hook_list

    def build_writers(self):
        """
        Detectron2's default writers (console, ``metrics.json``, TensorBoard), each smoothing
        over the ``SOLVER.LOG_PERIOD`` iterations since its last write (so with a period of 1 the
        logged values are those of each iteration).
        """
        window = self.cfg.SOLVER.LOG_PERIOD
        PathManager.mkdirs(self.cfg.OUTPUT_DIR)
        return [
            CommonMetricPrinter(self.max_iter, window_size=window),
            JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), window_size=window),
            TensorboardXWriter(self.cfg.OUTPUT_DIR, window_size=window),
        ]

    @classmethod
    def build_ddp_model(cls, cfg, model):
        """
        Wraps ``model`` in DistributedDataParallel when there are several processes. CPU models
        get ``device_ids=None``; Detectron2's default (the local rank) is only valid on GPUs.
        """
        kwargs = {
            "broadcast_buffers": False,
            "find_unused_parameters": cfg.SOLVER.YOLACT_DDP_FIND_UNUSED_PARAMETERS,
        }
        if next(model.parameters()).device.type == "cpu":
            kwargs["device_ids"] = None
            if comm.get_world_size() > 1 and cfg.MODEL.RESNETS.NORM in ("SyncBN", "nnSyncBN"):
                raise ValueError(
                    f"MODEL.RESNETS.NORM={cfg.MODEL.RESNETS.NORM} (torch.nn.SyncBatchNorm) needs "
                    "CUDA; for synchronised BatchNorm across CPU processes use 'naiveSyncBN'."
                )
        return create_ddp_model(model, **kwargs)

    @classmethod
    def build_step_trainer(cls, cfg, model, data_loader, optimizer) -> SimpleTrainer:
        """
        Returns:
            SimpleTrainer: :class:`YolactAMPTrainer` with ``SOLVER.AMP.ENABLED`` (CUDA only),
            else :class:`YolactSimpleTrainer` (bf16 autocast with ``SOLVER.BF16_CPU`` on CPU).
        """
        on_cpu = next(model.parameters()).device.type == "cpu"
        if cfg.SOLVER.AMP.ENABLED:
            if on_cpu:
                raise ValueError(
                    "SOLVER.AMP.ENABLED needs CUDA; on CPU use SOLVER.BF16_CPU=True instead."
                )
            return YolactAMPTrainer(
                model,
                data_loader,
                optimizer,
                max_grad_norm=full_model_max_grad_norm(cfg),
                max_nonfinite_steps=cfg.SOLVER.MAX_NONFINITE_STEPS,
            )
        if cfg.SOLVER.BF16_CPU and not on_cpu:
            logger.warning("SOLVER.BF16_CPU is ignored on CUDA; use SOLVER.AMP.ENABLED.")
        return YolactSimpleTrainer(
            model,
            data_loader,
            optimizer,
            bf16_cpu=cfg.SOLVER.BF16_CPU and on_cpu,
            max_grad_norm=full_model_max_grad_norm(cfg),
            max_nonfinite_steps=cfg.SOLVER.MAX_NONFINITE_STEPS,
        )

    @classmethod
    def build_optimizer(cls, cfg, model):
        """
        See :func:`build_yolact_optimizer`: with Base-YOLACT.yaml, the reference's SGD.
        """
        return build_yolact_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        """
        Detectron2's training loader with :class:`YolactDatasetMapper`; with
        ``DATALOADER.YOLACT_BAD_DATA`` "error" every record is validated first.
        """
        if cfg.DATALOADER.YOLACT_BAD_DATA == "error":
            dicts = get_detection_dataset_dicts(
                cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
            )
            count = validate_training_data(cfg, dicts)
            logger.info(f"DATALOADER.YOLACT_BAD_DATA 'error': {count} training records checked")
        return build_detection_train_loader(cfg, mapper=YolactDatasetMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=YolactDatasetMapper(cfg, False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """
        Returns:
            YolactCOCOEvaluator: "bbox" and "segm" on a COCO-format dataset, results written to
            ``output_folder`` (default ``OUTPUT_DIR/inference``).
        """
        return YolactCOCOEvaluator(
            dataset_name,
            tasks=("bbox", "segm"),
            distributed=True,
            output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"),
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        )
