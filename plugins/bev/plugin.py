"""Entry point of the built-in BEV plugin (``kdtoolbox.plugins: bev``).

Two groups register their components: ``lidar`` (LiDAR-to-LiDAR: SparseKD, sparse voxel imitation,
the generated LiDAR scenes) and ``camera`` (the camera BEV student and the cross-modal distillers).
Each group module exposes ``register(registry)``.
"""
import importlib

import kdtoolbox

#: modules of this package that register components, in order
GROUP_MODULES = ('lidar', 'camera')


@kdtoolbox.hookimpl
def kdtoolbox_register(registry):
    for name in GROUP_MODULES:
        importlib.import_module(f'{__package__}.{name}').register(registry)
