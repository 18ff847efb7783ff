"""Entry point of the built-in detection plugin (``kdtoolbox.plugins: detection``).

Each method module exposes ``register(registry)``; this hook calls them all.
"""
import kdtoolbox

from . import defeat, fgd, fgfi, fitnet, mimic

METHOD_MODULES = (fitnet, fgd, defeat, fgfi, mimic)


@kdtoolbox.hookimpl
def kdtoolbox_register(registry):
    for module in METHOD_MODULES:
        module.register(registry)
