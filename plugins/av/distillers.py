"""Distillers of the audio-visual plugin and their losses.

- :class:`~.mnf_csc.MNFCSC` (modality noise filter + contrastive semantic calibration, the paper's
  method; losses ``MNFTripletLoss``, ``CSCLoss``). The filter's parameters are named
  ``distiller.mnf.*``: give them the official 0.2x learning rate with
  ``optim_wrapper.paramwise_cfg = dict(custom_keys={'distiller.mnf': dict(lr_mult=0.2)})``.
- :class:`~.baselines.KD` (``KDLoss``), :class:`~.baselines.CRD` (``CRDLoss``; needs the dataset
  index in each data sample's metainfo key ``sample_idx`` and ``num_data`` = the training set's
  length), :class:`~.baselines.RKD` (``RKDLoss``, on the core relation losses).
- :class:`~.xkd.XKD` (cross-modal DINO distillation with EMA teachers and MMD alignment; losses
  ``CrossModalDINOLoss``, ``MMDLoss``; the model's teacher is ``NullTeacher``).

Student labels come from ``context.data_samples[i].gt_label``. Formulas, shapes and deviations
from the official code are in each module's docstring.
"""
from .baselines import CRD, KD, RKD, CRDLoss, KDLoss, RKDLoss
from .mnf_csc import MNFCSC, CSCLoss, MNFTripletLoss
from .xkd import XKD, CrossModalDINOLoss, MMDLoss

__all__ = ['MNFCSC', 'KD', 'CRD', 'RKD', 'XKD', 'MNFTripletLoss', 'CSCLoss', 'KDLoss', 'CRDLoss', 'RKDLoss',
           'CrossModalDINOLoss', 'MMDLoss']


def register(registry):
    """Register the distillers and their losses with the plugin's registrar."""
    for cls in (MNFCSC, KD, CRD, RKD, XKD):
        registry.distiller(cls)
    for cls in (MNFTripletLoss, CSCLoss, KDLoss, CRDLoss, RKDLoss, CrossModalDINOLoss, MMDLoss):
        registry.loss(cls)
