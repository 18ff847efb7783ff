"""Response-level distillers refuse a student/teacher pair whose class counts differ, at build."""
import pytest
from mmengine.config import ConfigDict

from conftest import retinanet_cfg
from kdtoolbox.registry import MODELS


@pytest.mark.parametrize('distiller, name', [
    (dict(type='GID', student_channels=64, teacher_channels=64), 'GID'),
    (dict(type='FRS', preset='retinanet', student_channels=64, teacher_channels=64), 'FRS'),
    (dict(type='RankMimicPFI'), 'RankMimicPFI'),
])
def test_different_class_counts_fail_at_build_naming_both(distiller, name):
    cfg = dict(type='kdtoolbox.DistillationModel', student=retinanet_cfg(18, num_classes=3),
               teacher=retinanet_cfg(18, num_classes=4), distiller=distiller)
    with pytest.raises(ValueError, match=rf'{name} compares class scores, but the student has 3 classes and '
                                         rf'the teacher 4'):
        MODELS.build(ConfigDict(cfg))
    cfg['teacher'] = retinanet_cfg(34, num_classes=3)
    MODELS.build(ConfigDict(cfg))  # equal counts build
