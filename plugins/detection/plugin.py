"""Entry point of the built-in detection plugin (``kdtoolbox.plugins: detection``).

Each module listed here exposes ``register(registry)``; this hook calls them all.
"""
import importlib

import kdtoolbox

#: modules of this package that register components, one per method
METHOD_MODULES = ('fitnet', 'fgd', 'defeat', 'fgfi', 'mimic', 'frs', 'rank_mimic', 'gid', 'pgd', 'maskd')


@kdtoolbox.hookimpl
def kdtoolbox_register(registry):
    for name in METHOD_MODULES:
        importlib.import_module(f'{__package__}.{name}').register(registry)
