import kdtoolbox

from .distiller import NeckL1


@kdtoolbox.hookimpl
def kdtoolbox_register(registry):
    registry.distiller(NeckL1)  # also: registry.loss / adapter / model / hook / dataset
