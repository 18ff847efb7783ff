"""Registers the generated multi-modal scenes (points + camera images + calibration) and the transform
that records the BEV augmentation for the camera student (both live in
:mod:`kdtoolbox.datasets.multimodal_scenes`, shared data code of the core)."""
from kdtoolbox.datasets.multimodal_scenes import (BEVAugMatrix, MultiModalScenesDataset,
                                                MultiViewImageResize)


def register(registry):
    registry.dataset(MultiModalScenesDataset)
    registry.transform(BEVAugMatrix)
    registry.transform(MultiViewImageResize)
