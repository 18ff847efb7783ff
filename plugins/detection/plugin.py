"""Entry point of the built-in detection plugin (``kdtoolbox.plugins: detection``)."""
import kdtoolbox

from .fitnet import FitNet


@kdtoolbox.hookimpl
def kdtoolbox_register(registry):
    registry.distiller(FitNet)
