"""Datasets: the generated shapes detection dataset (the default data, no download), and the generated
LiDAR / multi-modal scenes (modules ``lidar_scenes`` and ``multimodal_scenes``, registered by the bev plugin)."""
from .shapes import CLASSES, ShapesDataset, make_shapes_dataset, shapes_dataset_is_current

__all__ = ['CLASSES', 'ShapesDataset', 'make_shapes_dataset', 'shapes_dataset_is_current']
# The 3D datasets (lidar_scenes, multimodal_scenes) import mmdet3d: they are imported and registered by
# the bev plugin, so that `import kdtoolbox` stays free of mmdet3d and spconv.
