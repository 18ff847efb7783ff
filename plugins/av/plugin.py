"""Entry point of the built-in audio-visual plugin (``kdtoolbox.plugins: av``).

Each module listed here exposes ``register(registry)``; this hook calls them all.
"""
import importlib

import kdtoolbox

#: modules of this package that register components, in order
MODULE_NAMES = ('models', 'distillers', 'data', 'metrics')


@kdtoolbox.hookimpl
def kdtoolbox_register(registry):
    for name in MODULE_NAMES:
        importlib.import_module(f'{__package__}.{name}').register(registry)
