"""Registers the camera group of the BEV plugin: each module in MODULES exposes register(registry)."""
import importlib

#: modules of this package in the camera group, one per method / component family
MODULES = ('camera_bevdet', 'camera_data', 'bevdistill', 'unidistill', 'distillbev')


def register(registry):
    for name in MODULES:
        importlib.import_module(f'{__package__}.{name}').register(registry)
