"""DistillationModel with real mmdet RetinaNets: teacher handling, loss merging, FitNet's formula."""
import collections

import pytest
import torch
from mmengine.registry import MODELS

from conftest import distill_model_cfg, fitnet_cfg, retinanet_cfg


def build(**kwargs):
    return MODELS.build(distill_model_cfg(fitnet_cfg(), **kwargs))


def count_calls(model):
    """Forward pre-hooks counting the calls started, per module name of ``model``."""
    counts = collections.Counter()
    handles = [m.register_forward_pre_hook(lambda mod, i, n=name: counts.update([n]))
               for name, m in model.named_modules() if name]
    return counts, handles


def test_teacher_frozen_out_of_state_dict_and_eval_in_train_mode():
    model = build()
    assert not any(k.startswith('teacher.') for k in model.state_dict())
    assert any(k.startswith('student.') for k in model.state_dict())
    assert any(k.startswith('distiller.adapters.') for k in model.state_dict())
    assert all(not p.requires_grad for p in model.teacher.parameters())
    assert not any(p is q for p in model.parameters() for q in model.teacher.parameters())
    model.train()
    assert model.student.training and not model.teacher.training
    assert not any(m.training for m in model.teacher.modules())


def test_teacher_follows_device_and_dtype_moves():
    model = build()
    model.double()
    assert next(model.teacher.parameters()).dtype == torch.float64
    model.float()
    assert next(model.teacher.parameters()).dtype == torch.float32


def test_teacher_stops_after_the_last_recorded_module(det_batch):
    inputs, samples = det_batch
    model = build()
    counts, handles = count_calls(model.teacher)
    model(inputs, samples, mode='loss')
    assert counts['neck'] == 1 and counts['backbone'] == 1
    assert counts['bbox_head'] == 0 and not any(n.startswith('bbox_head') for n in counts)
    for h in handles:
        h.remove()
    untruncated = build(truncate_teacher=False)
    counts, _ = count_calls(untruncated.teacher)
    untruncated(inputs, samples, mode='loss')
    # mmdet calls bbox_head.forward() directly (no hooks); its convs run once per FPN level
    assert counts['bbox_head.retina_cls'] == 5


def test_loss_merges_student_and_distiller_losses_and_matches_fitnet_formula(det_batch):
    inputs, samples = det_batch
    model = build()
    model.train()
    losses = model(inputs, samples, mode='loss')
    assert {'loss_cls', 'loss_bbox'} <= set(losses)
    hint_keys = [f'distill.fpn{i}.loss_hint' for i in range(5)]
    assert set(hint_keys) <= set(losses)
    # Independent computation: neck features from extract_feat, the distiller's adapters,
    # mean squared error written out as sum / numel.
    with torch.no_grad():
        t_feats = model.teacher.extract_feat(inputs)
        s_feats = model.student.extract_feat(inputs)
        for i, key in enumerate(hint_keys):
            s = model.distiller.adapters[i](s_feats[i])
            expected = ((s - t_feats[i]) ** 2).sum() / s.numel()
            torch.testing.assert_close(losses[key].detach(), expected, rtol=1e-5, atol=1e-7)
    # The distillation loss reaches the student and the adapters, never the teacher.
    total = sum(losses[k] for k in hint_keys)
    total.backward()
    assert model.distiller.adapters[0].conv.weight.grad is not None
    assert model.student.neck.fpn_convs[0].conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_scale_zero_skips_the_teacher_and_scale_multiplies(det_batch):
    inputs, samples = det_batch
    model = build()
    counts, _ = count_calls(model.teacher)
    model.distill_loss_scale = 0.0
    losses = model(inputs, samples, mode='loss')
    assert not any(k.startswith('distill.') for k in losses)
    assert sum(counts.values()) == 0
    model.distill_loss_scale = 1.0
    full = model(inputs, samples, mode='loss')['distill.fpn0.loss_hint']
    model.distill_loss_scale = 0.25
    quarter = model(inputs, samples, mode='loss')['distill.fpn0.loss_hint']
    torch.testing.assert_close(quarter, 0.25 * full)


def test_predict_and_tensor_modes_are_the_student(det_batch):
    inputs, samples = det_batch
    model = build()
    model.eval()
    with torch.no_grad():
        out = model(inputs, samples, mode='tensor')
        ref = model.student(inputs, samples, mode='tensor')
    for a, b in zip(out[0], ref[0]):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        preds = model(inputs, samples, mode='predict')
    assert len(preds) == len(samples) and hasattr(preds[0], 'pred_instances')


def test_teacher_checkpoint_is_loaded_and_strictly_checked(tmp_path, det_batch):
    teacher = MODELS.build(retinanet_cfg(34))
    path = tmp_path / 'teacher.pth'
    torch.save({'state_dict': teacher.state_dict(), 'meta': {}}, path)
    model = build(teacher_checkpoint=str(path))
    for (k, a), (_, b) in zip(teacher.state_dict().items(), model.teacher.state_dict().items()):
        assert torch.equal(a, b), k
    wrong = tmp_path / 'wrong.pth'
    torch.save({'state_dict': MODELS.build(retinanet_cfg(18)).state_dict()}, wrong)
    n_missing = len(set(teacher.state_dict()) - set(MODELS.build(retinanet_cfg(18)).state_dict()))
    with pytest.raises(RuntimeError, match=rf"teacher_checkpoint '.*wrong.pth' does not fit the teacher config: "
                                           rf"{n_missing} missing keys \(backbone.layer1.2.conv1.weight, .*more\)"):
        build(teacher_checkpoint=str(wrong))
    # unexpected keys and shape mismatches are counted and named too
    other = MODELS.build(retinanet_cfg(34, num_classes=5)).state_dict()
    other['extra.weight'] = torch.zeros(1)
    odd = tmp_path / 'odd.pth'
    torch.save({'state_dict': other}, odd)
    with pytest.raises(RuntimeError, match=r"1 unexpected keys \(extra.weight\); 2 keys of another shape "
                                           r"\(checkpoint vs config\) \(bbox_head.retina_cls.weight \(45, 64, 3, 3\) vs "
                                           r"\(27, 64, 3, 3\)"):
        build(teacher_checkpoint=str(odd))
    # teacher_strict=False loads what fits and leaves the rest
    model = build(teacher_checkpoint=str(odd), teacher_strict=False)
    assert torch.equal(model.teacher.state_dict()['backbone.conv1.weight'], other['backbone.conv1.weight'])
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint')
    with pytest.raises(RuntimeError, match=r"teacher_checkpoint '.*garbage.pth' cannot be read"):
        build(teacher_checkpoint=str(garbage))


def test_missing_config_file_names_the_role():
    with pytest.raises(FileNotFoundError, match="teacher: config file 'nope.py'"):
        MODELS.build(distill_model_cfg(fitnet_cfg(), teacher='nope.py'))


def test_student_and_teacher_from_config_files(tmp_path):
    from mmengine.config import Config
    cfg = Config(dict(model=retinanet_cfg(18), default_scope='mmdet'))
    cfg.model.pop('_scope_')
    path = tmp_path / 'student.py'
    cfg.dump(str(path))
    model = MODELS.build(distill_model_cfg(fitnet_cfg(), student=str(path)))
    assert type(model.student).__name__ == 'RetinaNet'


def test_package_config_paths_resolve_with_their_scope():
    from kdtoolbox.engine.builder import model_config
    cfg = model_config('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', 'teacher')
    assert cfg['type'] == 'RetinaNet' and cfg['_scope_'] == 'mmdet'
    assert cfg['backbone']['depth'] == 50


def test_teacher_preprocessor_teacher_runs_its_own_preprocessing_on_the_same_raw_batch():
    """teacher_preprocessor='teacher': the teacher's own DetDataPreprocessor (no normalisation, no
    BGR->RGB) makes its batch from the raw images; the student's normalises."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    teacher = retinanet_cfg(34)
    teacher['data_preprocessor'] = dict(type='DetDataPreprocessor', mean=[0., 0., 0.], std=[1., 1., 1.],
                                        bgr_to_rgb=False, pad_size_divisor=32)
    model = MODELS.build(distill_model_cfg(fitnet_cfg(), teacher=teacher, teacher_preprocessor='teacher'))
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 96, 120), dtype=torch.uint8)
    sample = DetDataSample(metainfo=dict(img_shape=(96, 120), ori_shape=(96, 120), scale_factor=(1., 1.)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[10., 10., 50., 60.]]), labels=torch.tensor([1]))
    seen = {}
    model.teacher.backbone.register_forward_pre_hook(lambda m, a: seen.__setitem__('teacher', a[0]))
    model.student.backbone.register_forward_pre_hook(lambda m, a: seen.__setitem__('student', a[0]))
    batch = model.preprocess(dict(inputs=[image], data_samples=[sample]), True)
    losses = model(**batch, mode='loss')
    assert torch.equal(seen['teacher'][0, :, :96, :120], image.float())  # raw, not normalised
    assert seen['teacher'].shape[-2:] == seen['student'].shape[-2:] == (96, 128)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    assert torch.allclose(seen['student'][0, :, :96, :120], (image.flip(0).float() - mean) / std, atol=1e-5)
    # each side has its own data samples (preprocessors write into them)
    assert batch['data_samples'][0] is not batch['teacher_batch']['data_samples'][0]
    assert all(torch.isfinite(v).all() for k, v in losses.items() if k.startswith('distill.'))


def test_teacher_preprocessor_is_checked():
    with pytest.raises(ValueError, match="teacher_preprocessor must be one of"):
        build(teacher_preprocessor='own')
