"""SparseKD on mmdet3d CenterHeads: each loss against an independent computation of the official formula
on small hand-checkable maps (one GT box at a known cell), label KD through the student's target
assignment, the teacher BN mode, TGI narrowing, and edge cases (no boxes, boxes off the grid,
different map sizes)."""
import copy
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import ROOT


@pytest.fixture(autouse=True)
def _mmdet3d_scope():
    from mmdet3d.utils import register_all_modules
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        yield


def sk():
    from kdtoolbox_plugins.bev import sparsekd
    return sparsekd


GRID = 8  # 1 m cells over [0, 8) x [0, 8): cell (y, x) holds centres in [x, x+1) x [y, y+1)


def center_head(channels=8, grid=GRID, out_size_factor=1):
    """A real mmdet3d CenterHead (one task, 3 classes) on a ``grid / out_size_factor`` square map."""
    from mmengine.registry import MODELS
    voxel = [1.0, 1.0, 4.0]
    pc_range = [0.0, 0.0, -3.0, float(grid), float(grid), 1.0]
    cfg = dict(
        type='CenterHead', in_channels=channels,
        tasks=[dict(num_class=3, class_names=['car', 'pedestrian', 'cyclist'])],
        common_heads=dict(reg=(2, 2), height=(1, 2), dim=(3, 2), rot=(2, 2), vel=(2, 2)),
        share_conv_channel=channels,
        bbox_coder=dict(type='CenterPointBBoxCoder', pc_range=pc_range[:2], post_center_range=[-10, -10, -10, 20, 20, 10],
                        max_num=50, score_threshold=0.1, out_size_factor=out_size_factor, voxel_size=voxel[:2],
                        code_size=9),
        separate_head=dict(type='SeparateHead', init_bias=-2.19, final_kernel=3),
        loss_cls=dict(type='mmdet.GaussianFocalLoss', reduction='mean'),
        loss_bbox=dict(type='mmdet.L1Loss', reduction='mean', loss_weight=0.25), norm_bbox=True,
        train_cfg=dict(grid_size=[grid, grid, 1], voxel_size=voxel, point_cloud_range=pc_range,
                       out_size_factor=out_size_factor, dense_reg=1, gaussian_overlap=0.1, max_objs=20, min_radius=2,
                       code_weights=[1.0] * 10),
        test_cfg=dict(post_center_limit_range=[-10, -10, -10, 20, 20, 10], max_per_img=50, max_pool_nms=False,
                      min_radius=[1, 1, 1], score_threshold=0.1, out_size_factor=out_size_factor,
                      voxel_size=voxel[:2], nms_type='rotate', pre_max_size=100, post_max_size=50, nms_thr=0.2))
    return MODELS.build(cfg)


class Det(nn.Module):
    """The smallest detector-shaped module: a CenterHead at ``pts_bbox_head`` and a BatchNorm."""

    def __init__(self, **kwargs):
        super().__init__()
        self.bn = nn.BatchNorm2d(2)
        self.pts_bbox_head = center_head(**kwargs)

    def forward(self, *args, **kwargs):
        return None


def gt_instances(boxes):
    """InstanceData with LiDAR boxes (x, y, z_bottom, l, w, h, yaw) + zero velocity and labels."""
    from mmdet3d.structures import LiDARInstance3DBoxes
    from mmengine.structures import InstanceData
    t = torch.tensor([b[:7] + [0.0, 0.0] for b in boxes], dtype=torch.float32).reshape(-1, 9)
    return InstanceData(bboxes_3d=LiDARInstance3DBoxes(t, box_dim=9),
                        labels_3d=torch.tensor([int(b[7]) for b in boxes], dtype=torch.long))


def sample(boxes):
    from mmdet3d.structures import Det3DDataSample
    s = Det3DDataSample()
    s.gt_instances_3d = gt_instances(boxes)
    return s


def records(distiller, maps, owner):
    from kdtoolbox.engine.recorder import Records, RecordSpec
    recorders = distiller.student_recorders if owner == 'student' else distiller.teacher_recorders
    specs = {k: RecordSpec.parse(v, k) for k, v in recorders.items()}
    return Records(owner, {f't0.{k}': [v] for k, v in maps.items()}, specs)


def random_maps(b=1, size=GRID, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    maps = {'heatmap': torch.randn(b, 3, size, size, generator=g) * 2,
            'reg': torch.rand(b, 2, size, size, generator=g), 'height': torch.randn(b, 1, size, size, generator=g),
            'dim': torch.randn(b, 3, size, size, generator=g) * 0.3, 'rot': torch.randn(b, 2, size, size, generator=g),
            'vel': torch.zeros(b, 2, size, size)}
    if requires_grad:
        for v in maps.values():
            v.requires_grad_(True)
    return maps


def make_pair(student_kwargs=None, **distiller_kwargs):
    from kdtoolbox_plugins.bev.sparsekd import SparseKD
    student, teacher = Det(**(student_kwargs or {})), Det()
    distiller = SparseKD(**distiller_kwargs)
    distiller.check_models(student, teacher)
    return distiller, student, teacher


# ----------------------------------------------------------------------------------- the ops
def test_pivotal_mask_by_hand():
    p = torch.tensor([[[[0.2, 0.9], [0.0001, 0.5]], [[0.6, 0.1], [0.3, 0.5]]]])  # [1, 2, 2, 2]
    g = torch.tensor([[[[1.0, 0.5], [0.0, 0.2]], [[0.0, 0.25], [0.0, 0.4]]]])
    # soft: max_k p = [[0.6, 0.9], [0.3, 0.5]], max_k g = [[1, 0.5], [0, 0.4]]
    expected = torch.tensor([[[0.6, 0.45], [0.0, 0.2]]])
    assert torch.allclose(sk().pivotal_mask(p, g), expected)
    # hard fg (sum_k g > 0), threshold 0.55 on the teacher peak
    expected_hard = torch.tensor([[[0.6, 0.9], [0.0, 0.0]]])
    assert torch.allclose(sk().pivotal_mask(p, g, thresh=0.55, soft=True) / torch.tensor([[[1.0, 0.5], [1., 1.]]]),
                          expected_hard)
    assert torch.equal(sk().pivotal_mask(p, g, soft=False), torch.tensor([[[1.0, 1.0], [0.0, 1.0]]]))
    # rank: the top-2 class scores are 0.9 at (0, 1) and 0.6 at (0, 0)
    assert torch.equal(sk().rank_mask(p, 2), torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]))
    assert torch.allclose(sk().pivotal_mask(p, None, rank=2), torch.tensor([[[0.6, 0.9], [0.0, 0.0]]]))


def test_heatmap_kd_loss_by_hand():
    s = torch.tensor([[[[0.5, 0.1]], [[0.2, 0.3]]]])  # [1, 2, 1, 2]
    t = torch.tensor([[[[0.1, 0.1]], [[0.4, 0.0]]]])
    m = torch.tensor([[[2.0, 1.0]]])
    # cell 0: (0.4^2 + 0.2^2) * 2 = 0.4; cell 1: (0 + 0.3^2) * 1 = 0.09; / (3 + 1e-6)
    assert sk().heatmap_kd_loss(s, t, m).item() == pytest.approx(0.49 / (3 + 1e-6))
    assert sk().heatmap_kd_loss(s, t, torch.zeros_like(m)).item() == 0.0
    with pytest.raises(ValueError, match='differ'):
        sk().heatmap_kd_loss(s[:, :1], t, m)


def test_center_reg_kd_loss_one_box():
    s = torch.zeros(2, 2, 3, 3)
    t = torch.zeros(2, 2, 3, 3)
    s[0, :, 1, 2] = torch.tensor([1.0, -2.0])  # the GT centre of sample 0 at (y=1, x=2): index 5
    t[0, :, 1, 2] = torch.tensor([0.5, 1.0])
    s[1, :, 0, 0] = 7.0  # masked slot: ignored
    ind = torch.tensor([[5, 0], [0, 0]])
    mask = torch.tensor([[1, 0], [0, 0]], dtype=torch.uint8)
    # per channel |1 - 0.5| = 0.5 and |-2 - 1| = 3, over one object
    assert sk().center_reg_kd_loss(s, t, ind, mask).item() == pytest.approx(3.5)
    assert sk().center_reg_kd_loss(s, t, ind, mask, [2.0, 0.0]).item() == pytest.approx(1.0)
    assert sk().center_reg_kd_loss(s, t, ind, torch.zeros_like(mask)).item() == 0.0


# --------------------------------------------------------------------------- the distiller
def _expected_losses(student_maps, teacher_maps, teacher_head, gts, hm_weight=15.0, reg_weight=0.2):
    """SparseKD written out with loops (one task)."""
    heatmaps, _, inds, masks = teacher_head.get_targets(gts)
    student_maps = {k: v.detach() for k, v in student_maps.items()}
    pt = teacher_maps['heatmap'].sigmoid().clamp(1e-4, 1 - 1e-4)
    ps = student_maps['heatmap'].sigmoid().clamp(1e-4, 1 - 1e-4)
    if ps.shape != pt.shape:
        ps = F.interpolate(ps, size=pt.shape[-2:], mode='bilinear', align_corners=False)
    b, k, h, w = pt.shape
    num, den = 0.0, 0.0
    for bi in range(b):
        for y in range(h):
            for x in range(w):
                m = float(pt[bi, :, y, x].max()) * float(heatmaps[0][bi, :, y, x].max())
                num += m * float(((ps[bi, :, y, x] - pt[bi, :, y, x]) ** 2).sum())
                den += m
    hm = hm_weight * num / (den + 1e-6)
    order = ('reg', 'height', 'dim', 'rot')
    sb = torch.cat([student_maps[n] for n in order], 1)
    tb = torch.cat([teacher_maps[n] for n in order], 1)
    if sb.shape != tb.shape:
        return hm, None, heatmaps[0]
    total, count = 0.0, 0
    for bi in range(b):
        for j in range(inds[0].shape[1]):
            if masks[0][bi, j]:
                y, x = divmod(int(inds[0][bi, j]), w)
                total += float((sb[bi, :, y, x] - tb[bi, :, y, x]).abs().sum())
                count += 1
    reg = reg_weight * total / max(count, 1)
    return hm, reg, heatmaps[0]


def test_forward_matches_the_formula_one_box_at_a_known_cell():
    from kdtoolbox.engine import DistillContext
    distiller, student, teacher = make_pair()
    assert distiller.student_recorders['t0.heatmap'] == 'pts_bbox_head.task_heads.0.heatmap'
    # one car centred at (x=5.5, y=2.5): cell (y=2, x=5)
    samples = [sample([[5.5, 2.5, -1.0, 4.0, 2.0, 1.5, 0.0, 0]])]
    s_maps, t_maps = random_maps(seed=1, requires_grad=True), random_maps(seed=2)
    out = distiller(records(distiller, s_maps, 'student'), records(distiller, t_maps, 'teacher'),
                    DistillContext(data_samples=samples))
    hm, reg, fg = _expected_losses(s_maps, t_maps, teacher.pts_bbox_head, [s.gt_instances_3d for s in samples])
    assert fg[0, 0, 2, 5] == 1.0 and fg[0, 0].argmax() == 2 * GRID + 5  # layout [y, x]
    assert out['sparsekd.loss_hm'].item() == pytest.approx(hm, rel=1e-5)
    assert out['sparsekd.loss_reg'].item() == pytest.approx(reg, rel=1e-5)
    (out['sparsekd.loss_hm'] + out['sparsekd.loss_reg']).backward()
    assert s_maps['heatmap'].grad.abs().sum() > 0 and s_maps['dim'].grad.abs().sum() > 0
    assert s_maps['vel'].grad is None  # not in the official HEAD_ORDER


def test_no_boxes_and_boxes_off_the_grid_give_zero():
    from kdtoolbox.engine import DistillContext
    distiller, _, _ = make_pair()
    for boxes in ([], [[30.0, 30.0, -1.0, 4.0, 2.0, 1.5, 0.0, 0]]):
        s_maps = random_maps(seed=3, requires_grad=True)
        out = distiller(records(distiller, s_maps, 'student'), records(distiller, random_maps(seed=4), 'teacher'),
                        DistillContext(data_samples=[sample(boxes)]))
        assert out['sparsekd.loss_hm'].item() == 0.0 and out['sparsekd.loss_reg'].item() == 0.0
        (out['sparsekd.loss_hm'] + out['sparsekd.loss_reg']).backward()  # still differentiable


def test_coarser_student_is_interpolated_and_skips_regression():
    from kdtoolbox.engine import DistillContext
    distiller, _, teacher = make_pair(student_kwargs=dict(out_size_factor=2), hm_weight=7.0, reg_weight=0.2)
    samples = [sample([[5.5, 2.5, -1.0, 4.0, 2.0, 1.5, 0.0, 0], [1.5, 6.5, -1.0, 0.8, 0.7, 1.7, 0.0, 1]])]
    s_maps, t_maps = random_maps(size=GRID // 2, seed=5), random_maps(seed=6)
    out = distiller(records(distiller, s_maps, 'student'), records(distiller, t_maps, 'teacher'),
                    DistillContext(data_samples=samples))
    hm, _, _ = _expected_losses(s_maps, t_maps, teacher.pts_bbox_head, [s.gt_instances_3d for s in samples], 7.0)
    assert out['sparsekd.loss_hm'].item() == pytest.approx(hm, rel=1e-5)
    assert 'sparsekd.loss_reg' not in out


def test_check_models_errors():
    from kdtoolbox_plugins.bev.sparsekd import SparseKD
    with pytest.raises(ValueError, match='no module'):
        SparseKD(head='bbox_head').check_models(Det(), Det())
    with pytest.raises(ValueError, match='teacher_bn_mode'):
        SparseKD(teacher_bn_mode='frozen')


# ----------------------------------------------------------------------------------- label KD
def _teacher_outputs(score_logit, cell=(2, 5), label=1):
    maps = {k: v.clone() for k, v in random_maps(seed=7).items()}
    maps['heatmap'].fill_(-10.0)
    maps['heatmap'][0, label, cell[0], cell[1]] = score_logit
    maps['reg'].fill_(0.5)
    maps['height'].fill_(0.0)
    maps['dim'].fill_(0.0)  # exp(0) = 1 m cubes
    maps['rot'][:, 0].fill_(0.0)
    maps['rot'][:, 1].fill_(1.0)
    return ([maps],)


def test_label_kd_adds_confident_teacher_boxes_to_the_student_targets():
    distiller, student, teacher = make_pair(label_score_thresh=[0.6, 0.6, 0.6])
    student.train()
    gt = gt_instances([[1.5, 1.5, -1.0, 4.0, 2.0, 1.5, 0.0, 0]])
    plain = student.pts_bbox_head.get_targets([gt])[0][0]
    # decoded by the teacher's bbox_coder: centre ((5 + 0.5) * 1 m, (2 + 0.5) * 1 m), bottom z = 0 - 1 / 2
    decoded = sk().decode_center_head(teacher.pts_bbox_head, _teacher_outputs(2.0))[0]
    top = decoded.scores_3d.argmax()
    assert decoded.scores_3d[top].item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item(), rel=1e-5)
    assert torch.allclose(decoded.bboxes_3d.tensor[top, :7], torch.tensor([5.5, 2.5, -0.5, 1.0, 1.0, 1.0, 0.0]),
                          atol=1e-5)
    assert int(decoded.labels_3d[top]) == 1
    for logit, added in ((2.0, True), (0.2, False)):  # sigmoid 0.88 > 0.6; 0.55 < 0.6
        distiller._keep_teacher_outputs(None, None, _teacher_outputs(logit))
        merged = student.pts_bbox_head.get_targets([gt])[0][0]
        assert merged[0, 0, 1, 1] == 1.0  # the GT stays
        assert bool(merged[0, 1, 2, 5] == 1.0) is added
        if not added:
            assert torch.equal(merged, plain)
    assert gt.bboxes_3d.tensor.shape[0] == 1  # the data sample's GT is not modified
    # per-class thresholds (pillar configs: 0.6 / 0.5 / 0.5): 0.55 passes for class 1
    distiller.label_score_thresh = [0.6, 0.5, 0.5]
    distiller._keep_teacher_outputs(None, None, _teacher_outputs(0.2))
    assert student.pts_bbox_head.get_targets([gt])[0][0][0, 1, 2, 5] == 1.0
    # no teacher pass in this step: the GT alone
    assert torch.equal(student.pts_bbox_head.get_targets([gt])[0][0], plain)


def test_merge_orders_teacher_first():
    from mmengine.structures import InstanceData
    from mmdet3d.structures import LiDARInstance3DBoxes
    gt = gt_instances([[1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 2]])
    teacher = InstanceData(bboxes_3d=LiDARInstance3DBoxes(torch.ones(2, 7), box_dim=7), labels_3d=torch.tensor([0, 1]),
                           scores_3d=torch.tensor([0.9, 0.7]))
    merged = sk().merge_gt_and_teacher(gt, teacher)
    assert merged.labels_3d.tolist() == [0, 1, 2] and merged.bboxes_3d.tensor.shape == (3, 9)
    assert merged.bboxes_3d.tensor[0, 7:].abs().sum() == 0  # zero-padded velocity
    assert sk().merge_gt_and_teacher(gt, teacher, gt_first=True).labels_3d.tolist() == [2, 0, 1]
    assert len(sk().confident_boxes(teacher, 0.8)) == 1 and len(sk().confident_boxes(teacher[:0], 0.5)) == 0


# ----------------------------------------------------------------------------------- BN mode
@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_teacher_bn_mode(mode):
    distiller, student, teacher = make_pair(teacher_bn_mode=mode)
    teacher.eval()
    student.train()
    teacher(None)
    assert teacher.bn.training is (mode == 'train') and not teacher.training
    student.eval()
    teacher(None)
    assert teacher.bn.training is False


# ------------------------------------------------------------------------------------------ TGI
def test_narrowing_by_hand():
    from kdtoolbox_plugins.bev.lidar_tgi import concat_index, narrow_state_dict, narrow_tensor
    w = torch.arange(4 * 6, dtype=torch.float32).view(4, 6)
    assert torch.equal(narrow_tensor(w, (2, 3)), w[:2, :3])
    assert concat_index([3, 3], [1, 2]).tolist() == [0, 3, 4]
    state, missing, skipped = narrow_state_dict({'a': w, 'b': torch.ones(3)}, {'a': torch.zeros(2, 3), 'c': torch.zeros(1)},
                                                concat_inputs={'a': (1, [3, 3], [1, 2])})
    assert torch.equal(state['a'], w[:2][:, [0, 3, 4]]) and missing == ['c'] and skipped == ['b']
    with pytest.raises(ValueError, match='wider'):
        narrow_tensor(w, (5, 6), 'a')
    with pytest.raises(ValueError, match='not implemented'):
        narrow_state_dict({}, {}, mode='ofa')


def test_tgi_on_the_demo_pair():
    from kdtoolbox.registry import MODELS
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, 'configs/bev/demo/sparsekd_voxel_half_scenes.py'))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg['teacher_checkpoint'] = None
    model = MODELS.build(model_cfg)
    model.init_weights()
    s, t = model.student.state_dict(), model.teacher.state_dict()
    w_s, w_t = s['pts_middle_encoder.conv_input.0.weight'], t['pts_middle_encoder.conv_input.0.weight']
    assert w_s.shape == (8, 3, 3, 3, 4) and torch.equal(w_s, w_t[:8, :, :, :, :4])  # spconv 2 [out, k, k, k, in]
    assert torch.equal(s['pts_backbone.blocks.0.0.weight'], t['pts_backbone.blocks.0.0.weight'][:32, :128])
    # the head's input is the FPN concatenation [128 | 128] in the teacher, [64 | 64] in the student
    idx = list(range(64)) + list(range(128, 192))
    assert torch.equal(s['pts_bbox_head.shared_conv.conv.weight'],
                       t['pts_bbox_head.shared_conv.conv.weight'][:32][:, idx])
    assert torch.equal(s['pts_bbox_head.task_heads.0.heatmap.1.bias'], t['pts_bbox_head.task_heads.0.heatmap.1.bias'])
