"""ConfigurableDistiller: records through adapters into losses, checked against hand computation."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

import kdtoolbox
from kdtoolbox.engine import DistillContext
from kdtoolbox.engine.recorder import Records, RecordSpec
from kdtoolbox.registry import ComponentNotFoundError

from conftest import distill_model_cfg


def records(owner, **values):
    """Records as a recorder would produce them: name -> list of calls."""
    return Records(owner, {k: v if isinstance(v, list) else [v] for k, v in values.items()},
                   {k: RecordSpec(module=k) for k in values})


def test_feature_mse_with_adapter_matches_hand_computation():
    distiller = kdtoolbox.DISTILLERS.build(dict(
        type='ConfigurableDistiller',
        student_recorders=dict(f='neck'), teacher_recorders=dict(f='neck'),
        adapters=dict(a=dict(type='ConvAdapter', in_channels=2, out_channels=3)),
        losses=dict(mse=dict(type='FeatureMSELoss', loss_weight=2.0,
                             inputs=dict(student=dict(record='student.f', adapter='a'), teacher='teacher.f')))))
    s = torch.randn(2, 2, 4, 4)
    t = torch.randn(2, 3, 4, 4)
    out = distiller(records('student', f=s), records('teacher', f=t), DistillContext())
    conv = distiller.adapters['a'].conv
    expected = 2.0 * ((F.conv2d(s, conv.weight, conv.bias) - t) ** 2).sum() / t.numel()
    torch.testing.assert_close(out['mse.loss'], expected)


def test_call_and_index_select_the_right_tensors():
    distiller = kdtoolbox.DISTILLERS.build(dict(
        type='ConfigurableDistiller',
        student_recorders=dict(head='bbox_head.retina_cls', neck='neck'),
        teacher_recorders=dict(head='bbox_head.retina_cls', neck='neck'),
        losses=dict(
            cls2=dict(type='FeatureMSELoss', reduction='sum',
                      inputs=dict(student=dict(record='student.head', call=2), teacher=dict(record='teacher.head', call=2))),
            p1=dict(type='FeatureMSELoss', reduction='sum',
                    inputs=dict(student=dict(record='student.neck', index=1), teacher=dict(record='teacher.neck', index=1))))))
    s_calls = [torch.full((1, 1), float(i)) for i in range(5)]
    t_calls = [torch.zeros(1, 1) for _ in range(5)]
    s_neck = (torch.zeros(1, 1), torch.full((1, 2), 3.0))
    t_neck = (torch.zeros(1, 1), torch.zeros(1, 2))
    out = distiller(records('student', head=s_calls, neck=s_neck), records('teacher', head=t_calls, neck=t_neck),
                    DistillContext())
    assert out['cls2.loss'].item() == 4.0  # (2 - 0)^2
    assert out['p1.loss'].item() == 18.0  # 2 * 3^2


def test_resize_adapter_gets_the_teacher_as_target():
    distiller = kdtoolbox.DISTILLERS.build(dict(
        type='ConfigurableDistiller', student_recorders=dict(f='x'), teacher_recorders=dict(f='x'),
        adapters=dict(r=[dict(type='ResizeAdapter', mode='nearest'), dict(type='IdentityAdapter')]),
        losses=dict(m=dict(type='FeatureMSELoss', reduction='sum',
                           inputs=dict(student=dict(record='student.f', adapter='r'), teacher='teacher.f')))))
    s = torch.ones(1, 1, 2, 2)
    t = torch.zeros(1, 1, 4, 4)
    out = distiller(records('student', f=s), records('teacher', f=t), DistillContext())
    assert out['m.loss'].item() == 16.0


@pytest.mark.parametrize('losses, message', [
    (dict(m=dict(type='FeatureMSELoss', inputs=dict(student='student.g', teacher='teacher.f'))),
     r"distiller.losses.m.inputs.student: no student recorder named 'g'"),
    (dict(m=dict(type='FeatureMSELoss', inputs=dict(pred='student.f', teacher='teacher.f'))),
     r"distiller.losses.m.inputs.pred: FeatureMSELoss.forward has no argument 'pred'"),
    (dict(m=dict(type='FeatureMSELoss', inputs=dict(student=dict(record='student.f', adapter='z'), teacher='teacher.f'))),
     r"no adapter named 'z'"),
    (dict(m=dict(type='FeatureMSELos', inputs=dict(student='student.f', teacher='teacher.f'))),
     r"(?s)distiller.losses.m.type='FeatureMSELos'.*Did you mean 'FeatureMSELoss'"),
    (dict(m=dict(type='FeatureMSELoss')), r"distiller.losses.m: missing 'inputs'"),
    (dict(m=dict(type='FeatureMSELoss', inputs=dict(student='pupil.f', teacher='teacher.f'))),
     r"record must be 'student.NAME' or 'teacher.NAME'"),
    (dict(m=dict(type='FeatureMSELoss', reduction='median', inputs=dict(student='student.f', teacher='teacher.f'))),
     r"reduction must be"),
])
def test_config_errors_name_the_key_at_fault(losses, message):
    with pytest.raises((KeyError, TypeError, ValueError, ComponentNotFoundError), match=message):
        kdtoolbox.DISTILLERS.build(dict(type='ConfigurableDistiller', student_recorders=dict(f='x'),
                                        teacher_recorders=dict(f='x'), losses=losses), where='distiller')


def test_unknown_distiller_type_suggests_close_names():
    with pytest.raises(ComponentNotFoundError, match=r"(?s)distiller.type='FitNett'.*Did you mean 'FitNet'"):
        kdtoolbox.DISTILLERS.build(dict(type='FitNett'), where='distiller')


def test_mmdet_loss_usable_by_scope_prefix():
    loss = kdtoolbox.LOSSES.build(dict(type='mmdet.L1Loss', loss_weight=1.0))
    assert type(loss).__name__ == 'L1Loss'


def test_configurable_distiller_in_a_real_model(det_batch):
    """Head logits of the 3rd FPN level (a module called 5 times) and P3 neck features."""
    inputs, samples = det_batch
    model = MODELS.build(distill_model_cfg(dict(
        type='ConfigurableDistiller',
        student_recorders=dict(cls='bbox_head.retina_cls', p3='neck.fpn_convs.0.conv'),
        teacher_recorders=dict(cls='bbox_head.retina_cls', p3='neck.fpn_convs.0.conv'),
        losses=dict(cls=dict(type='FeatureMSELoss', inputs=dict(student=dict(record='student.cls', call=2),
                                                                 teacher=dict(record='teacher.cls', call=2))),
                    p3=dict(type='FeatureMSELoss', inputs=dict(student='student.p3', teacher='teacher.p3'))))))
    losses = model(inputs, samples, mode='loss')
    with torch.no_grad():
        s_cls, _ = model.student(inputs, samples, mode='tensor')
        t_cls, _ = model.teacher(inputs, samples, mode='tensor')
        s_p3 = model.student.extract_feat(inputs)[0]
        t_p3 = model.teacher.extract_feat(inputs)[0]
    torch.testing.assert_close(losses['distill.cls.loss'].detach(), F.mse_loss(s_cls[2], t_cls[2]))
    torch.testing.assert_close(losses['distill.p3.loss'].detach(), F.mse_loss(s_p3, t_p3))


def test_num_classes_lookup_and_check():
    from kdtoolbox.engine.checks import num_classes_of, require_same_num_classes
    from mmdet.registry import MODELS
    from conftest import faster_rcnn_cfg, retinanet_cfg
    retina3, retina5 = MODELS.build(retinanet_cfg(18, 3)), MODELS.build(retinanet_cfg(18, 5))
    from mmengine.config import ConfigDict
    frcnn = MODELS.build(ConfigDict(faster_rcnn_cfg(18, num_classes=3)))
    assert num_classes_of(retina3) == 3 and num_classes_of(frcnn, ('roi_head.bbox_head',)) == 3
    assert num_classes_of(frcnn) == 3 and num_classes_of(frcnn, ('rpn_head',)) == 1
    assert require_same_num_classes(retina3, retina3, 'X') == 3
    with pytest.raises(ValueError, match='X compares class scores, but the student has 3 classes and the teacher 5'):
        require_same_num_classes(retina3, retina5, 'X')
    with pytest.raises(ValueError, match='cannot find num_classes on the student'):
        require_same_num_classes(torch.nn.Linear(2, 2), retina3, 'X')
