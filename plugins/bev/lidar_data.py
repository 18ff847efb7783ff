"""Registers the generated LiDAR scenes and their 3D box AP metric (both live in
:mod:`kdtoolbox.datasets.lidar_scenes`, shared data code of the core that imports mmdet3d)."""
from kdtoolbox.datasets.lidar_scenes import LidarBoxAPMetric, LidarScenesDataset


def register(registry):
    registry.dataset(LidarScenesDataset)
    registry.metric(LidarBoxAPMetric)
