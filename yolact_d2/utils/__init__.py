# Copyright (c) yolact_d2 contributors.
from .visualization import draw_predictions, filter_for_display
