"""Registers the lidar group of the BEV plugin: each module in MODULES exposes register(registry)."""
import importlib

#: modules of this package in the lidar group, one per method / component family
MODULES = ('lidar_data', 'sparsekd', 'sparse_imitation')


def register(registry):
    for name in MODULES:
        importlib.import_module(f'{__package__}.{name}').register(registry)
