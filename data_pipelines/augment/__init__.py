"""YOLOv4 data augmentation as batched, stateless, XLA-compilable TensorFlow ops."""
from data_pipelines.augment.color import adjust_hsv, random_hsv
from data_pipelines.augment.cutmix import random_cutmix, random_mixup
from data_pipelines.augment.geometry import random_flip, random_jitter
from data_pipelines.augment.mosaic import random_mosaic
from data_pipelines.augment.partners import same_dataset_partners
from data_pipelines.augment.pipeline import YoloV4Augment

__all__ = [
    "YoloV4Augment",
    "adjust_hsv",
    "random_cutmix",
    "random_flip",
    "random_hsv",
    "random_jitter",
    "random_mixup",
    "random_mosaic",
    "same_dataset_partners",
]
