"""Datasets: the generated shapes detection dataset (the default data, no download)."""
from .shapes import CLASSES, ShapesDataset, make_shapes_dataset, shapes_dataset_is_current

__all__ = ['CLASSES', 'ShapesDataset', 'make_shapes_dataset', 'shapes_dataset_is_current']
from .lidar_scenes import LIDAR_CLASSES, LidarScenesDataset, lidar_scenes_is_current, make_lidar_scenes  # noqa: E402

__all__ += ['LIDAR_CLASSES', 'LidarScenesDataset', 'lidar_scenes_is_current', 'make_lidar_scenes']
