"""Feature-imitation adapters (registered in ``kdtoolbox.ADAPTERS``)."""
from .conv import ConvAdapter, ConvNormActAdapter
from .init import init_adapter_weights
from .mlp import MLPAdapter
from .spatial import AdapterSequence, IdentityAdapter, ResizeAdapter, apply_adapter
from .sparse import SparseLinearAdapter, SubMConvAdapter  # imports spconv only when SubMConvAdapter is built

__all__ = ['ConvAdapter', 'ConvNormActAdapter', 'MLPAdapter', 'IdentityAdapter', 'ResizeAdapter',
           'AdapterSequence', 'apply_adapter', 'init_adapter_weights', 'SparseLinearAdapter',
           'SubMConvAdapter']
