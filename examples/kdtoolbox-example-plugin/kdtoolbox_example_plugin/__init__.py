"""An example kdtoolbox plugin: one distiller, registered through the entry point in pyproject.toml."""
from .distiller import NeckL1

__all__ = ['NeckL1']
