# Copyright (c) yolact_d2 contributors.
"""What the training tests share: a tiny config (R-18, 128 x 128, CPU) and how to train it."""

import os

import torch
from torch import nn

from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from yolact_d2.engine import YolactTrainer

from common import get_config, load_script

CKPT_LOGGER = "fvcore.common.checkpoint"
ENGINE_LOGGER = "yolact_d2.engine.trainer"
# R-18 (basic blocks) at 128 x 128, batch 2 (1 per process with 2 processes), no evaluation.
TINY_OPTS = [
    "MODEL.RESNETS.DEPTH", 18,
    "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
    "MODEL.YOLACT.INPUT_SIZE", 128,
    "DATASETS.TRAIN", ("tiny_coco_train",),
    "DATASETS.TEST", (),
    "DATALOADER.NUM_WORKERS", 0,
    "SOLVER.IMS_PER_BATCH", 2,
    "SOLVER.MAX_ITER", 3,
    "SOLVER.CHECKPOINT_PERIOD", 100,
    "SEED", 0,
    # From random weights: BatchNorm trains at batch 2 (the reference's rule would freeze it).
    "MODEL.YOLACT.FREEZE_BN_BELOW_BATCH", 0,
    "MODEL.YOLACT.PRETRAINED_RECIPE", False,
]  # fmt: skip


def tiny_cfg(output_dir: str = "", opts=()):
    cfg = get_config("yolact_R_50_FPN_550.yaml", TINY_OPTS + list(opts))
    cfg.OUTPUT_DIR = output_dir
    return cfg


def train(cfg, resume=False, hooks=()):
    # As train_net.py (default_setup): the initial weights come from cfg.SEED, not from whatever
    # the tests before this one left in the global RNG. Some random initialisations, after only
    # 3 steps, make eval-mode BatchNorm saturate the class logits (no score above 0).
    seed_all_rng(cfg.SEED)
    trainer = YolactTrainer(cfg)
    trainer.register_hooks(list(hooks))
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def lr_schedule(cfg):
    """The learning rate of every iteration under YolactTrainer's scheduler."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    scheduler = YolactTrainer.build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(cfg.SOLVER.MAX_ITER):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def load_train_net():
    return load_script("train_net.py")


def distributed_worker(cfg, output_dir):
    """Trains in one of the processes started by launch(); saves its final parameters."""
    torch.set_num_threads(1)
    trainer = train(cfg)
    model = trainer.model.module if comm.get_world_size() > 1 else trainer.model
    losses = (
        [v for v, _ in trainer.storage.history("total_loss").values()]
        if comm.is_main_process()
        else []
    )
    state = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers() if "running_" in k}
    torch.save(
        {
            "params": state,
            "running_stats": buffers,
            "world_size": comm.get_world_size(),
            "losses": losses,
        },
        os.path.join(output_dir, f"rank{comm.get_rank()}.pth"),
    )
