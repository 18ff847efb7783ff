"""Method-agnostic losses (registered in ``kdtoolbox.LOSSES``)."""
from .feature import FeatureMSELoss, feature_mse

__all__ = ['FeatureMSELoss', 'feature_mse']
