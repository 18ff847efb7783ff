"""Weight initialisation schemes used by feature-imitation adapters in the papers."""
from __future__ import annotations

import torch.nn as nn


def init_adapter_weights(module: nn.Module, scheme: str = 'default', std: float = 1e-4) -> None:
    """Initialise every conv/linear layer of ``module`` in place.

    Schemes: 'default' (PyTorch's), 'kaiming' (normal, fan_out, ReLU; bias 0), 'xavier'
    (uniform; bias 0), 'zeros' (weights and bias 0), 'near_zero' (truncated normal with ``std``,
    1e-4 as FGFI and DeFeat use, within +-2 std; bias 0).
    """
    if scheme == 'default':
        return
    for m in module.modules():
        if not isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            continue
        if scheme == 'kaiming':
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
        elif scheme == 'xavier':
            nn.init.xavier_uniform_(m.weight)
        elif scheme == 'zeros':
            nn.init.zeros_(m.weight)
        elif scheme == 'near_zero':
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
        else:
            raise ValueError(f"adapter init {scheme!r}: expected 'default', 'kaiming', 'xavier', "
                             f"'zeros' or 'near_zero'")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
