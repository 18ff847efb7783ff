"""Rank Mimicking + PFI: the losses against plain loops and hand-computed numbers, the positive
anchors against mmdet's own loss targets, the distiller inside a DistillationModel (edge cases,
switches, gradients), the paper config and two iterations of the demo config through tools/train.py."""
import math
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS

from conftest import ROOT, distill_model_cfg, make_det_batch, retinanet_cfg
from kdtoolbox.ops.dense_assign import assign_anchors_to_gts, levels_to_anchor_rows
from kdtoolbox_plugins.detection.rank_mimic import (PFI, RankMimicking, RankMimicPFI, pfi_loss,
                                                    rank_mimic_loss)


# --- references written plainly from the paper ------------------------------------------------
def loop_softmax(xs):
    z = sum(math.exp(x) for x in xs)
    return [math.exp(x) / z for x in xs]


def loop_rank_mimic(groups_scores, temperature):
    """mean over groups of KL(softmax(t/T) || softmax(s/T)); groups_scores: [(s list, t list)]."""
    kls = []
    for s, t in groups_scores:
        ps, pt = loop_softmax([v / temperature for v in s]), loop_softmax([v / temperature for v in t])
        kls.append(sum(q * (math.log(q) - math.log(p)) for p, q in zip(ps, pt)))
    return sum(kls) / len(kls) if kls else 0.0


def loop_pfi(fs, ft, cs, ct):
    """mean over levels of mean_{n,h,w}(mean_k (cs - ct)^2 * mean_c (fs - ft)^2), nested lists."""
    per_level = []
    for f_s, f_t, c_s, c_t in zip(fs, ft, cs, ct):
        n_n, c_n, h_n, w_n, k_n = len(f_s), len(f_s[0]), len(f_s[0][0]), len(f_s[0][0][0]), len(c_s[0])
        acc = 0.0
        for n in range(n_n):
            for h in range(h_n):
                for w in range(w_n):
                    p = sum((c_s[n][k][h][w] - c_t[n][k][h][w]) ** 2 for k in range(k_n)) / k_n
                    f = sum((f_s[n][c][h][w] - f_t[n][c][h][w]) ** 2 for c in range(c_n)) / c_n
                    acc += p * f
        per_level.append(acc / (n_n * h_n * w_n))
    return sum(per_level) / len(per_level)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- RM loss ------------------------------------------------------------------------------------
@pytest.mark.parametrize('temperature', [1.0, 0.5, 2.0])
def test_rank_mimic_loss_matches_plain_loops(temperature):
    sizes = [3, 1, 5, 2]  # a single-anchor group has KL 0 but still counts in the mean
    s, t = rand(sum(sizes), seed=1).sigmoid(), rand(sum(sizes), seed=2).sigmoid()
    ids = [7, 3, 12, 0]  # arbitrary GT ids, interleaved anchors
    groups = torch.tensor([ids[g] for g, n in enumerate(sizes) for _ in range(n)])
    perm = torch.randperm(len(groups), generator=torch.Generator().manual_seed(0))
    value = rank_mimic_loss(s[perm], t[perm], groups[perm], temperature)
    ref_groups, start = [], 0
    for n in sizes:
        ref_groups.append((s[start:start + n].tolist(), t[start:start + n].tolist()))
        start += n
    assert value.item() == pytest.approx(loop_rank_mimic(ref_groups, temperature), rel=1e-10)


def test_rank_mimic_hand_computed_reversed_ranking():
    # teacher scores (1, 0), student (0, 1): P_t = (e, 1) / (e + 1), P_s reversed, so
    # KL = (p1 - p2) log(p1 / p2) = (e - 1) / (e + 1); sorting each vector first would give 0
    value = rank_mimic_loss(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]), torch.tensor([0, 0]))
    assert value.item() == pytest.approx((math.e - 1) / (math.e + 1), rel=1e-6)
    same = rank_mimic_loss(torch.tensor([0.3, 0.9, 0.1]), torch.tensor([0.3, 0.9, 0.1]), torch.tensor([5, 5, 5]))
    assert same.item() == pytest.approx(0.0, abs=1e-7)


def test_rank_mimic_loss_without_anchors_is_zero_with_a_graph():
    s = torch.zeros(0, requires_grad=True)
    value = rank_mimic_loss(s, torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert value.item() == 0.0
    value.backward()


def test_rank_mimic_gradient_reaches_student_scores_only():
    s = torch.tensor([0.2, 0.7, 0.4], requires_grad=True)
    t = torch.tensor([0.9, 0.1, 0.5], requires_grad=True)
    rank_mimic_loss(s, t, torch.tensor([0, 0, 0])).backward()
    assert s.grad.abs().sum() > 0 and t.grad is None


# --- PFI loss -----------------------------------------------------------------------------------
def test_pfi_loss_matches_plain_loops():
    sizes = [(4, 3), (2, 2), (1, 1)]
    fs = [rand(2, 3, *s, seed=10 + i) for i, s in enumerate(sizes)]
    ft = [rand(2, 3, *s, seed=20 + i) for i, s in enumerate(sizes)]
    cs = [rand(2, 6, *s, seed=30 + i) for i, s in enumerate(sizes)]
    ct = [rand(2, 6, *s, seed=40 + i) for i, s in enumerate(sizes)]
    ref = loop_pfi(*[[x.tolist() for x in xs] for xs in (fs, ft, cs, ct)])
    for detach in (True, False):
        assert pfi_loss(fs, ft, cs, ct, detach).item() == pytest.approx(ref, rel=1e-10)


def test_pfi_hand_computed_and_the_detach_flag():
    # one cell: logits differ by (1, 3) -> p_diff = (1 + 9) / 2 = 5; features by 2 -> f_diff = 4
    cs = torch.tensor([1.0, 3.0]).view(1, 2, 1, 1).requires_grad_()
    fs = torch.tensor([2.0]).view(1, 1, 1, 1).requires_grad_()
    zero_c, zero_f = torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1, 1)
    value = pfi_loss([fs], [zero_f], [cs], [zero_c], detach_prediction=True)
    assert value.item() == pytest.approx(20.0)
    value.backward()
    assert cs.grad is None and fs.grad.item() == pytest.approx(5.0 * 2 * 2.0)  # p_diff * d(f_diff)/dF
    fs.grad = None
    pfi_loss([fs], [zero_f], [cs], [zero_c], detach_prediction=False).backward()
    # d/dc_k (mean_k (c_k)^2 * f_diff) = c_k * f_diff
    assert cs.grad.view(-1).tolist() == pytest.approx([1.0 * 4.0, 3.0 * 4.0])


# --- positive anchors ---------------------------------------------------------------------------
def build(distiller, num_classes=3, **kwargs):
    """Tiny RetinaNets (R18 both: different random weights are all the tests need)."""
    kwargs.setdefault('student', retinanet_cfg(18, num_classes))
    cfg = distill_model_cfg(distiller, teacher=retinanet_cfg(18, num_classes), **kwargs)
    return MODELS.build(cfg)


def test_levels_to_anchor_rows_order():
    # level 0: [N=1, A*K = 2*3, H=2, W=2]; row (h, w, a) holds channels a*K .. a*K+K-1
    t = torch.arange(24.0).view(1, 6, 2, 2)
    rows = levels_to_anchor_rows([t, torch.zeros(1, 6, 1, 1)], 3)
    assert rows.shape == (1, 2 * 2 * 2 + 2, 3)
    h, w, a = 1, 0, 1
    assert rows[0, (h * 2 + w) * 2 + a].tolist() == [t[0, a * 3 + k, h, w].item() for k in range(3)]
    with pytest.raises(ValueError, match='level 1'):
        levels_to_anchor_rows([t, torch.zeros(1, 4, 1, 1)], 3)


def mmdet_positive_sets(head, featmap_sizes, samples):
    """{(image, GT): sorted anchor indices} from mmdet's own loss targets (sampling results)."""
    from mmengine.structures import InstanceData  # noqa: F401
    metas = [s.metainfo for s in samples]
    anchors, valid = head.get_anchors(featmap_sizes, metas, device='cpu')
    targets = head.get_targets(anchors, valid, [s.gt_instances for s in samples], metas,
                               return_sampling_results=True)
    sets = {}
    for img, res in enumerate(targets[-1]):
        for anchor, gt in zip(res.pos_inds.tolist(), res.pos_assigned_gt_inds.tolist()):
            sets.setdefault((img, gt), []).append(anchor)
    return {k: sorted(v) for k, v in sets.items()}


def test_assignment_matches_mmdets_loss_targets_and_an_exact_anchor():
    model = build(dict(type='RankMimicking'))
    head = model.student.bbox_head
    # an anchor of P3 (stride 8, base 32 px, ratio 1, middle scale 32 * 2^(1/3)) centred on (40, 40)
    side = 32 * 2 ** (1 / 3)
    exact = [40 - side / 2, 40 - side / 2, 40 + side / 2, 40 + side / 2]
    inputs, samples = make_det_batch(n=2, size=128, boxes=[exact, [70., 30., 120., 100.]])
    sizes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    gt_inds = assign_anchors_to_gts(head, sizes, samples, torch.device('cpu'))
    ours = {}
    for img, inds in enumerate(gt_inds):
        for anchor in torch.nonzero(inds).squeeze(1).tolist():
            ours.setdefault((img, int(inds[anchor]) - 1), []).append(anchor)
    assert ours == mmdet_positive_sets(head, sizes, samples) and len(ours) == 4
    # anchor order: level 0 first, then (h, w, a) with a = ratio-major (0.5, 1, 2) x 3 scales
    exact_row = (5 * 16 + 5) * 9 + 1 * 3 + 1
    assert exact_row in ours[(0, 0)]


# --- the distiller inside a DistillationModel --------------------------------------------------
def spy_forward(model):
    seen = {}
    real = model.distiller.forward

    def spy(student, teacher, context):
        seen.update(student=student, teacher=teacher, context=context)
        return real(student, teacher, context)

    model.distiller.forward = spy
    return seen


def loop_distiller_rm(seen, num_classes, temperature=1.0):
    """L_RM from the recorded logits by explicit index arithmetic and mmdet's positive sets."""
    s_lv, t_lv = seen['student'].calls('cls')[:5], seen['teacher'].calls('cls')[:5]
    sizes = [tuple(t.shape[-2:]) for t in s_lv]
    samples = seen['context'].data_samples
    sets = mmdet_positive_sets(seen['context'].student.bbox_head, sizes, samples)
    groups = []
    for (img, gt), anchors in sorted(sets.items()):
        label = int(samples[img].gt_instances.labels[gt])
        s_vals, t_vals = [], []
        for row in anchors:
            for lvl, (h_n, w_n) in enumerate(sizes):  # row -> (level, h, w, anchor)
                if row < h_n * w_n * 9:
                    break
                row -= h_n * w_n * 9
            cell, a = divmod(row, 9)
            h, w = divmod(cell, w_n)
            s_vals.append(torch.sigmoid(s_lv[lvl][img, a * num_classes + label, h, w]).item())
            t_vals.append(torch.sigmoid(t_lv[lvl][img, a * num_classes + label, h, w]).item())
        groups.append((s_vals, t_vals))
    return loop_rank_mimic(groups, temperature), len(groups)


@pytest.mark.parametrize('num_classes, temperature', [(3, 1.0), (1, 2.0)])
def test_distiller_rm_matches_loops_over_mmdets_positives(num_classes, temperature):
    torch.manual_seed(0)
    model = build(dict(type='RankMimicPFI', temperature=temperature, student_channels=64, teacher_channels=64),
                  num_classes=num_classes)
    seen = spy_forward(model)
    inputs, samples = make_det_batch(n=2, size=128, boxes=[[10., 20., 60., 90.], [70., 30., 120., 100.],
                                                           [30., 60., 64., 96.]])
    for s in samples:
        s.gt_instances.labels = s.gt_instances.labels % num_classes
    losses = model(inputs, samples, mode='loss')
    ref, num_groups = loop_distiller_rm(seen, num_classes, temperature)
    assert num_groups == 6
    assert losses['distill.rank_mimic.loss_kl'].item() == pytest.approx(4.0 * ref, rel=1e-4)
    s_f = [seen['student'][f'feat{i}'] for i in range(5)]
    t_f = [seen['teacher'][f'feat{i}'] for i in range(5)]
    ref_pfi = loop_pfi(*[[x.detach().double().tolist() for x in xs] for xs in
                         (s_f, t_f, seen['student'].calls('cls')[:5], seen['teacher'].calls('cls')[:5])])
    assert losses['distill.pfi.loss_feat'].item() == pytest.approx(1.5 * ref_pfi, rel=1e-4)


def test_images_without_boxes_and_boxes_off_the_grid():
    model = build(dict(type='RankMimicking'))
    seen = spy_forward(model)
    inputs, samples = make_det_batch(n=2, size=128)
    samples[1].gt_instances = samples[1].gt_instances[:0]  # one image without boxes
    value = model(inputs, samples, mode='loss')['distill.rank_mimic.loss_kl']
    ref, num_groups = loop_distiller_rm(seen, 3)
    assert num_groups == 2 and value.item() == pytest.approx(4.0 * ref, rel=1e-4)
    for s in samples:  # a batch without boxes: 0, and a graph to backpropagate through
        s.gt_instances = s.gt_instances[:0]
    value = model(inputs, samples, mode='loss')['distill.rank_mimic.loss_kl']
    assert value.item() == 0.0 and value.requires_grad
    # boxes outside the image: mmdet's assigner still matches each to its best anchors
    # (min_pos_iou=0); whatever it assigns, the loss is finite and follows the same positives
    _, samples = make_det_batch(n=2, size=128, boxes=[[300., 300., 340., 360.], [10., 20., 60., 90.]])
    value = model(inputs, samples, mode='loss')['distill.rank_mimic.loss_kl']
    ref, _ = loop_distiller_rm(seen, 3)
    assert torch.isfinite(value) and value.item() == pytest.approx(4.0 * ref, rel=1e-4)


def test_switches_and_registered_names():
    from kdtoolbox.registry import DISTILLERS
    assert DISTILLERS.get('RankMimicPFI') is RankMimicPFI
    assert DISTILLERS.get('RankMimicking') is RankMimicking and DISTILLERS.get('PFI') is PFI
    inputs, samples = make_det_batch(n=1, size=64)
    keys = {}
    for name, cfg in [('both', dict(type='RankMimicPFI', student_channels=64, teacher_channels=64)),
                      ('rm', dict(type='RankMimicking')),
                      ('pfi', dict(type='PFI', student_channels=64, teacher_channels=64)),
                      ('rm_switch', dict(type='RankMimicPFI', pfi=False))]:
        model = build(cfg)
        keys[name] = {k for k in model(inputs, samples, mode='loss') if k.startswith('distill.')}
    assert keys['both'] == {'distill.rank_mimic.loss_kl', 'distill.pfi.loss_feat'}
    assert keys['rm'] == keys['rm_switch'] == {'distill.rank_mimic.loss_kl'}
    assert keys['pfi'] == {'distill.pfi.loss_feat'}
    assert RankMimicking().teacher_recorders == {'cls': 'bbox_head.retina_cls'}  # no features recorded
    with pytest.raises(ValueError, match='nothing to distil'):
        RankMimicPFI(rank_mimic=False, pfi=False)
    with pytest.raises(ValueError, match='temperature'):
        RankMimicPFI(temperature=0)
    with pytest.raises(ValueError, match='RankMimicking'):
        RankMimicking(pfi=True)


def test_errors_name_what_is_wrong():
    inputs, samples = make_det_batch(n=1, size=64)
    # a head path the models do not have fails when the model is built
    with pytest.raises(ValueError, match=r'RankMimicking: cannot find num_classes on the student \(looked at roi_head\)'):
        build(dict(type='RankMimicking', head='roi_head'))
    model = build(dict(type='RankMimicking'))
    seen = spy_forward(model)
    model(inputs, samples, mode='loss')
    seen['context'].data_samples[0].gt_instances.labels = torch.tensor([0, 7])  # past the student's loss
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\)'):
        model.distiller(seen['student'], seen['teacher'], seen['context'])
    with pytest.raises(ValueError, match='3 student channel counts'):
        PFI(student_channels=[64] * 3)


def test_gradients_reach_the_student_never_the_teacher():
    student = retinanet_cfg(18)
    student['neck']['out_channels'] = 32
    student['bbox_head'].update(in_channels=32, feat_channels=32)
    inputs, samples = make_det_batch(n=2, size=128)
    # RM: into the student's classifier
    model = build(dict(type='RankMimicking'), student=student)
    model(inputs, samples, mode='loss')['distill.rank_mimic.loss_kl'].backward()
    assert model.student.bbox_head.retina_cls.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())
    # PFI with a 1x1 adapter (32 -> 64 channels): into the FPN and the adapters; the detached
    # prediction gap sends nothing into the classifier
    model = build(dict(type='PFI', student_channels=32, teacher_channels=64), student=student)
    model(inputs, samples, mode='loss')['distill.pfi.loss_feat'].backward()
    assert model.student.bbox_head.retina_cls.weight.grad is None
    for i in range(5):
        assert model.student.neck.fpn_convs[i].conv.weight.grad.abs().sum() > 0, i
        assert model.distiller.adapters[i].conv.weight.grad.abs().sum() > 0, i
    assert all(p.grad is None for p in model.teacher.parameters())
    model = build(dict(type='PFI', student_channels=32, teacher_channels=64, detach_prediction=False),
                  student=student)
    model(inputs, samples, mode='loss')['distill.pfi.loss_feat'].backward()
    assert model.student.bbox_head.retina_cls.weight.grad.abs().sum() > 0


# --- the configs ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_rm_pfi_retinanet_config_builds_offline():
    from test_fgd import offline
    cfg = Config.fromfile(f'{ROOT}/configs/rm_pfi_retinanet.py')
    assert cfg.model.teacher == 'mmdet::retinanet/retinanet_r101_fpn_2x_coco.py'
    d = cfg.model.distiller
    assert (d.rm_weight, d.pfi_weight, d.temperature, d.rank_mimic, d.pfi) == (4.0, 1.5, 1.0, True, True)
    assert cfg.train_cfg.max_epochs == 24 and cfg.optim_wrapper.optimizer.lr == 0.01
    model = MODELS.build(offline('configs/rm_pfi_retinanet.py').model)
    assert model.teacher.backbone.depth == 101 and model.student.backbone.depth == 50
    assert type(model.distiller).__name__ == 'RankMimicPFI' and model.distiller.adapters is None


@pytest.mark.slow
def test_demo_config_trains_two_iterations(tmp_path):
    from test_train_e2e import data_options, run
    out = run(['tools/train.py', 'configs/demo/rm_pfi_retinanet_shapes.py', '--work-dir', str(tmp_path / 'work'),
               '--cfg-options', 'model.teacher_checkpoint=None', 'model.student.test_cfg.score_thr=0.0',
               'train_cfg.max_epochs=1', *data_options(tmp_path / 'shapes')])
    assert re.search(r'distill\.rank_mimic\.loss_kl: [0-9.]+', out), out[-3000:]
    assert re.search(r'distill\.pfi\.loss_feat: [0-9.]+', out), out[-3000:]
    assert 'coco/bbox_mAP' in out
    saved = torch.load(tmp_path / 'work' / 'epoch_1.pth', map_location='cpu')
    assert saved['meta']['iter'] == 2
