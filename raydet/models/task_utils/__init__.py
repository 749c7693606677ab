"""Box machinery: anchors, box coders, assigners, samplers (registered in ``TASK_UTILS``)."""
from .anchor_generator import AnchorGenerator
from .center_sampling_assigner import CenterSamplingAssigner
from .delta_xywh_coder import DeltaXYWHBBoxCoder
from .distance_point_coder import DistancePointBBoxCoder
from .max_iou_assigner import IGNORED, NEGATIVE, MaxIoUAssigner
from .random_sampler import RandomSampler

__all__ = ["AnchorGenerator", "CenterSamplingAssigner", "DeltaXYWHBBoxCoder", "DistancePointBBoxCoder",
           "MaxIoUAssigner", "RandomSampler", "NEGATIVE", "IGNORED"]
