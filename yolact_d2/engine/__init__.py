# Copyright (c) yolact_d2 contributors.
"""Training and evaluation of YOLACT with Detectron2's engine."""

from .optimizer import build_yolact_optimizer, full_model_max_grad_norm
from .predictor import YolactPredictor
from .trainer import YolactAMPTrainer, YolactSimpleTrainer, YolactTrainer, apply_yolact_autoscale
