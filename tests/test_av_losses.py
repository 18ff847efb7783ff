"""AV plugin losses against hand computations: MNF triplet (hinge at / below / above the margin),
gate sparsity (intended and the official slip), CSC (a temperature matrix written down, clamped and
unclamped), gradient isolation and the official two-optimizer gradients, KD, CRD, RKD, MMD and
XKD's cross-modal DINO loss."""
import math

import pytest
import torch
import torch.nn as nn

from kdtoolbox.engine import Records, RecordSpec
from kdtoolbox.engine.context import DistillContext
from kdtoolbox.losses.mmd import mmd_loss
from kdtoolbox_plugins.av.baselines import CRD, KD, RKD, crd_nce_loss, kd_loss
from kdtoolbox_plugins.av.mnf_csc import (MNFCSC, CSCLoss, csc_loss, csc_temperature, gate_sparsity,
                                          mnf_triplet_loss)
from kdtoolbox_plugins.av.xkd import CrossModalDINOLoss, cosine_momentum, ema_update
from mmengine.structures import BaseDataElement


def unit(deg, scale=1.0):
    r = math.radians(deg)
    return [scale * math.cos(r), scale * math.sin(r)]


def vecs(degs, scale=1.0):
    return torch.tensor([unit(d, scale) for d in degs], dtype=torch.float64)


def records(owner, **values):
    return Records(owner, {k: [v] for k, v in values.items()}, {k: RecordSpec(k) for k in values})


def samples(labels, **meta):
    out = []
    for i, y in enumerate(labels):
        ds = BaseDataElement(metainfo={k: v[i] for k, v in meta.items()})
        ds.gt_label = torch.tensor([y])
        out.append(ds)
    return out


# --- MNF triplet ---------------------------------------------------------------------------------
def test_triplet_hinge_above_at_below_margin():
    m = 0.5
    anchor = vecs([0, 0, 0], scale=3.0)  # scale must not matter: cosines
    negative = vecs([0, 60, 180], scale=2.0)  # cos(anchor, negative) = 1, 0.5, -1
    positive = vecs([90, 0, 0])  # cos(anchor, positive) = 0, 1, 1
    # rows: 1 - 0 + 0.5 = 1.5 (above), 0.5 - 1 + 0.5 = 0 (at), -1 - 1 + 0.5 = -1.5 -> 0 (below)
    positive.requires_grad_(True)
    loss = mnf_triplet_loss(anchor, negative, positive, margin=m)
    assert loss.item() == pytest.approx(1.5 / 3, abs=1e-9)
    loss.backward()
    assert positive.grad[0].abs().sum() > 0  # the active row pulls its positive
    assert positive.grad[2].abs().sum() == 0  # a row below the hinge gives nothing
    # each row alone
    for i, expected in enumerate([1.5, 0.0, 0.0]):
        assert mnf_triplet_loss(anchor[i:i + 1], negative[i:i + 1], positive[i:i + 1].detach(),
                                m).item() == pytest.approx(expected, abs=1e-9)
    # just above / below the hinge by 0.1 with margin 0.6 / 0.4
    assert mnf_triplet_loss(anchor[1:2], negative[1:2], positive[1:2].detach(), 0.6).item() == pytest.approx(0.1)
    assert mnf_triplet_loss(anchor[1:2], negative[1:2], positive[1:2].detach(), 0.4).item() == 0.0


def test_gate_sparsity_intended_and_official_slip():
    w1 = torch.tensor([[1.0, -2.0], [0.5, 0.5]])  # row sums of |W|: 3, 1 -> mean 2
    w2 = torch.tensor([[-4.0, 0.0, 2.0]])  # row sum 6 -> mean 6
    assert gate_sparsity([w1, w2]).item() == pytest.approx(8.0)
    assert gate_sparsity([w1, w2], legacy=True).item() == pytest.approx(6.0)


# --- CSC -----------------------------------------------------------------------------------------
V_DEG, A_DEG, SV_DEG = [0, 90, 180], [0, 90, 180], [90, 0, 180]
# cos(v_i, a~_j): [[1, 0, -1], [0, 1, 0], [-1, 0, 1]];  cos(v_i, sv_j): [[0, 1, -1], [1, 0, 0], [0, -1, 1]]
DELTA = 0.07
TAU = [[1.07, 0.07, -0.93], [0.07, 1.07, 0.07], [-0.93, 0.07, 1.07]]
S = [[0.0, 1.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 1.0]]
LABELS = [0, 0, 1]  # positives: {0, 1}, {0, 1}, {2}


def reference_csc(tau, s=S, labels=LABELS):
    total = 0.0
    for i in range(3):
        logits = [s[i][j] / tau[i][j] for j in range(3)]
        lse = math.log(sum(math.exp(x) for x in logits))
        pos = [j for j in range(3) if labels[j] == labels[i]]
        total += -sum(logits[j] - lse for j in pos) / len(pos)
    return total / 3


def test_csc_temperature_matrix_clamped_and_unclamped():
    v, a = vecs(V_DEG, 2.0), vecs(A_DEG, 0.5)
    tau = csc_temperature(v, a, DELTA, adaptive=True, clamp=False)
    assert torch.allclose(tau, torch.tensor(TAU, dtype=torch.float64), atol=1e-12)
    clamped = csc_temperature(v, a, DELTA, adaptive=True, clamp=True, min_temperature=0.01)
    expected = [[max(x, 0.01) for x in row] for row in TAU]
    assert torch.allclose(clamped, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    fixed = csc_temperature(v, a, DELTA, adaptive=False)
    assert torch.equal(fixed, torch.full((3, 3), DELTA, dtype=torch.float64))


@pytest.mark.parametrize('adaptive,clamp', [(True, False), (True, True), (False, True)])
def test_csc_loss_against_hand_computation(adaptive, clamp):
    v, a, sv = vecs(V_DEG), vecs(A_DEG), vecs(SV_DEG, 3.0)
    labels = torch.tensor(LABELS)
    if not adaptive:
        tau = [[DELTA] * 3 for _ in range(3)]
    else:
        tau = [[max(x, 0.01) if clamp else x for x in row] for row in TAU]
    loss = CSCLoss(DELTA, adaptive_temperature=adaptive, clamp_temperature=clamp)(v, sv, a, labels)
    assert loss.item() == pytest.approx(reference_csc(tau), rel=1e-9)


def test_csc_unclamped_negative_temperature_flips_the_ranking():
    # row 0, column 2: s = -1 (dissimilar) over tau = -0.93 gives a large positive logit
    v, a = vecs(V_DEG), vecs(A_DEG)
    tau = csc_temperature(v, a, DELTA, clamp=False)
    logits = (torch.tensor(S, dtype=torch.float64) / tau)[0]
    assert logits[2] > logits[0]  # the dissimilar pair (s = -1) outranks the orthogonal one (s = 0)
    tau = csc_temperature(v, a, DELTA, clamp=True)
    logits = (torch.tensor(S, dtype=torch.float64) / tau)[0]
    assert logits[2] < logits[0] < logits[1]


def test_csc_temperature_is_detached_and_shape_checked():
    v, a, sv = vecs(V_DEG).requires_grad_(), vecs(A_DEG).requires_grad_(), vecs(SV_DEG).requires_grad_()
    loss = CSCLoss(DELTA)(v, sv, a, torch.tensor(LABELS))
    loss.backward()
    assert a.grad is None  # only through the temperature, which is detached
    assert v.grad.abs().sum() > 0 and sv.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='temperature must be'):
        csc_loss(v, sv, torch.tensor(LABELS), torch.ones(2, 3))
    with pytest.raises(ValueError, match='min_temperature'):
        CSCLoss(min_temperature=0.0)


# --- MNFCSC distiller: gradient isolation and the official two-optimizer step -------------------
E, N_CLS = 8, 3


def mnfcsc_inputs(seed=0, n=4):
    g = torch.Generator().manual_seed(seed)
    token_map = torch.randn(n, E, 2, 2, 2, generator=g, dtype=torch.float64).requires_grad_()
    feature = torch.randn(n, E, generator=g, dtype=torch.float64).requires_grad_()
    teacher = torch.randn(n, E, generator=g, dtype=torch.float64)
    labels = [0, 1, 0, 2][:n]
    return token_map, feature, teacher, labels


def run_distiller(distiller, token_map, feature, teacher, labels):
    return distiller(records('student', tokens=token_map, feature=feature), records('teacher', feature=teacher),
                     DistillContext(data_samples=samples(labels)))


def test_mnfcsc_gradient_isolation():
    torch.manual_seed(0)
    d = MNFCSC(num_classes=N_CLS, embed_dim=E).double().train()
    token_map, feature, teacher, labels = mnfcsc_inputs()
    losses = run_distiller(d, token_map, feature, teacher, labels)
    assert set(losses) == {'mnf.loss_cls', 'mnf.loss_triplet', 'mnf.loss_sparsity', 'csc.loss_contrastive',
                           'mnf.gate_mean'}
    mnf_params = list(d.mnf.parameters())
    for key in ('mnf.loss_triplet', 'mnf.loss_cls', 'mnf.loss_sparsity'):
        grads = torch.autograd.grad(losses[key], [token_map, feature], retain_graph=True, allow_unused=True)
        assert all(g is None for g in grads), key  # the filter's losses never reach the student
        grads = torch.autograd.grad(losses[key], mnf_params, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), key
    g_tok, g_feat = torch.autograd.grad(losses['csc.loss_contrastive'], [token_map, feature], retain_graph=True)
    assert g_tok.abs().sum() > 0 and g_feat.abs().sum() > 0  # CSC trains the student
    grads = torch.autograd.grad(losses['csc.loss_contrastive'], [d.mnf.trans_sv[0].weight, d.mnf.gate[0].weight])
    assert all(g.abs().sum() > 0 for g in grads)  # and the filter (through sv and a~)
    # the triplet's gradient reaches the gate only (it depends on a~ alone)
    g_attn = torch.autograd.grad(losses['mnf.loss_triplet'], d.mnf.attn.in_proj_weight, allow_unused=True)[0]
    assert g_attn is None


def test_mnfcsc_matches_the_official_two_optimizer_gradients():
    """One backward here == official: a_losses.backward(); zero the student's grads; v_losses.backward()."""
    torch.manual_seed(1)
    # delta = 1 keeps tau away from 0, where the official log(softmax + 1e-10) departs from log_softmax
    margin, delta = 0.2, 1.0
    d = MNFCSC(num_classes=N_CLS, embed_dim=E, margin=margin, delta=delta, legacy_sparsity=True).double().train()
    ref = MNFCSC(num_classes=N_CLS, embed_dim=E).double().train()
    ref.load_state_dict(d.state_dict())
    token_map, feature, teacher, labels = mnfcsc_inputs(seed=3)
    losses = run_distiller(d, token_map, feature, teacher, labels)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    ours = {n: p.grad.clone() for n, p in d.mnf.named_parameters()}
    ours_student = token_map.grad.clone(), feature.grad.clone()
    stats_after = [b.clone() for b in d.mnf.buffers()]

    # the official procedure, written plainly
    tm2, f2 = token_map.detach().clone().requires_grad_(), feature.detach().clone().requires_grad_()
    y = torch.tensor(labels)
    fmap = tm2.flatten(2).transpose(1, 2)
    p_sv, sv, purified, fc_weights, _, _ = official_mnf(ref.mnf, teacher, fmap)
    norm = 0.001 * fc_weights[1].abs().sum(1).mean()  # the `=` slip: the last weight only
    cos = lambda x, z: nn.functional.normalize(x, dim=1) @ nn.functional.normalize(z, dim=1).t()  # noqa: E731
    detach_cos = cos(f2, purified).detach()
    triplet = torch.clamp(cos(f2, teacher).diag() - cos(f2, purified).diag() + margin, min=0).mean()
    loss_n = nn.functional.cross_entropy(p_sv, y)
    soft = torch.softmax(cos(f2, sv) / (detach_cos + delta), dim=-1)
    mask = (y[:, None] == y[None]).double()
    adj = ((-torch.log(soft + 1e-10) * mask).sum(-1) / mask.sum(1)).mean()
    assert (detach_cos + delta).min() > 0.05 and soft.min() > 1e-4  # no clamp, no epsilon effect
    a_losses, v_losses = loss_n + norm + triplet, adj
    ref.zero_grad()
    a_losses.backward(retain_graph=True)
    tm2.grad = None
    f2.grad = None  # video_optimizer.zero_grad()
    v_losses.backward()
    for n, p in ref.mnf.named_parameters():
        assert torch.allclose(ours[n], p.grad, atol=1e-8), n
    assert torch.allclose(ours_student[0], tm2.grad, atol=1e-8)
    assert torch.allclose(ours_student[1], f2.grad, atol=1e-8)
    # BatchNorm statistics updated once per step, as officially
    for ours_b, ref_b in zip(stats_after, ref.mnf.buffers()):
        assert torch.allclose(ours_b, ref_b), 'BN running stats differ from one official pass'


def official_mnf(mnf, audio, fmap):
    """The official MNF forward (sequence-first attention), on this module's weights."""
    video = fmap.mean(dim=1)
    weight = torch.sigmoid(mnf.gate(torch.cat([audio, video], dim=-1)))
    selected_audio = weight * audio
    q = selected_audio.unsqueeze(1).permute(1, 0, 2)
    kv = fmap.permute(1, 0, 2)
    mnf.attn.batch_first = False  # the official sequence-first layout, on the same weights
    try:
        sv, w = mnf.attn(q, kv, kv)
    finally:
        mnf.attn.batch_first = True
    sv = mnf.trans_sv(sv.permute(1, 0, 2).squeeze(1))
    return mnf.classifier(sv), sv, selected_audio, [mnf.gate[0].weight, mnf.gate[3].weight], weight, w


def test_mnfcsc_checks_widths_and_labels():
    d = MNFCSC(num_classes=N_CLS, embed_dim=E).double()
    token_map, feature, teacher, labels = mnfcsc_inputs()
    with pytest.raises(ValueError, match='embed_dim=8'):
        run_distiller(d, token_map, feature, teacher[:, :4], labels)
    with pytest.raises(KeyError, match='gt_label'):
        d(records('student', tokens=token_map, feature=feature), records('teacher', feature=teacher),
          DistillContext(data_samples=[BaseDataElement() for _ in range(4)]))
    with pytest.raises(KeyError, match='tokens'):
        MNFCSC(num_classes=3, embed_dim=E, student_recorders=dict(feature='neck'))


# --- KD / CRD / RKD --------------------------------------------------------------------------------
def test_kd_loss_by_hand():
    zs = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]], dtype=torch.float64)
    zt = torch.tensor([[math.log(3.0) * 2, 0.0], [0.0, 0.0]], dtype=torch.float64)
    t = 2.0
    # softmax(zt/T): row 0 [3/4, 1/4], row 1 [1/2, 1/2]; softmax(zs/T): row 0 [1/2, 1/2], row 1 [s, 1 - s]
    s = math.sqrt(3) / (math.sqrt(3) + 1)
    kl0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    kl1 = 0.5 * math.log(0.5 / s) + 0.5 * math.log(0.5 / (1 - s))
    assert kd_loss(zs, zt, t).item() == pytest.approx(t * t * (kl0 + kl1) / 2, rel=1e-12)
    assert kd_loss(zt, zt, t).item() == pytest.approx(0.0, abs=1e-12)
    d = KD(temperature=t, loss_weight=0.5)
    out = d(records('student', logits=zs), records('teacher', logits=zt), DistillContext())
    assert out['kd.loss_kd'].item() == pytest.approx(0.5 * t * t * (kl0 + kl1) / 2, rel=1e-12)
    with pytest.raises(ValueError, match='classes must match'):
        kd_loss(zs, zt[:, :1])


def test_crd_nce_loss_by_hand():
    scores = torch.tensor([[0.5, 0.1, 0.2], [0.25, 0.5, 0.0]], dtype=torch.float64)
    # num_data 4, K = 2 -> K * Pn = 0.5
    row0 = math.log(0.5 / 1.0) + math.log(0.5 / 0.6) + math.log(0.5 / 0.7)
    row1 = math.log(0.25 / 0.75) + math.log(0.5 / 1.0) + math.log(0.5 / 0.5)
    assert crd_nce_loss(scores, 4, eps=0.0).item() == pytest.approx(-(row0 + row1) / 2, rel=1e-12)


def make_crd(num_data=5):
    torch.manual_seed(0)
    d = CRD(num_data=num_data, student_channels=2, teacher_channels=2, feat_dim=2, num_negatives=2,
            temperature=0.5, momentum=0.5, loss_weight=1.0).double()
    with torch.no_grad():  # identity embeddings: e = normalize(f)
        for lin in (d.embed_s, d.embed_t):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
        d.memory_s.copy_(vecs([0, 90, 180, 270, 45]))
        d.memory_t.copy_(vecs([90, 0, 270, 180, 45]))
    return d


def test_crd_critic_memory_and_normaliser():
    d = make_crd()
    f_s, f_t = vecs([0, 90], 2.0), vecs([90, 180], 3.0)
    cidx = torch.tensor([[1, 0, 2], [3, 4, 0]])  # sample indices 1 and 3 in column 0
    ctx = DistillContext(data_samples=samples([0, 1], sample_idx=[1, 3]))
    out = d(records('student', feature=f_s), records('teacher', feature=f_t), ctx, contrast_idx=cidx)
    # student anchors e_s = (1,0), (0,1) against memory_t rows; teacher anchors (0,1), (-1,0) against memory_s
    dot_s = [[math.cos(math.radians(0 - a)) for a in (0, 90, 270)],
             [math.cos(math.radians(90 - a)) for a in (180, 45, 90)]]
    dot_t = [[math.cos(math.radians(90 - a)) for a in (90, 0, 180)],
             [math.cos(math.radians(180 - a)) for a in (270, 45, 0)]]
    h_s = [[math.exp(x / 0.5) for x in row] for row in dot_s]
    h_t = [[math.exp(x / 0.5) for x in row] for row in dot_t]
    z_s, z_t = sum(map(sum, h_s)) / 6 * 5, sum(map(sum, h_t)) / 6 * 5
    assert d.z_s.item() == pytest.approx(z_s) and d.z_t.item() == pytest.approx(z_t)

    def nce(h, z):
        total = 0.0
        for row in h:
            p = [x / z for x in row]
            total += math.log(p[0] / (p[0] + 2 / 5 + 1e-7)) + sum(math.log(0.4 / (x + 0.4 + 1e-7)) for x in p[1:])
        return -total / len(h)

    assert out['crd.loss_crd'].item() == pytest.approx(nce(h_s, z_s) + nce(h_t, z_t), rel=1e-9)
    # memory rows 1 and 3 moved halfway towards the new embeddings, renormalised
    exp_s1 = torch.nn.functional.normalize(torch.tensor([0.5 * 0 + 0.5 * 1, 0.5 * 1 + 0.5 * 0]), dim=0)
    assert torch.allclose(d.memory_s[1].float(), exp_s1, atol=1e-6)
    assert torch.allclose(d.memory_s[0], vecs([0])[0])  # untouched rows
    # Z stays fixed after the first batch
    z_before = d.z_s.clone()
    d(records('student', feature=f_s * 5), records('teacher', feature=f_t), ctx, contrast_idx=cidx)
    assert torch.equal(d.z_s, z_before)


def test_crd_needs_sample_idx_and_random_negatives():
    d = make_crd()
    f = vecs([0, 90])
    with pytest.raises(KeyError, match="'sample_idx'"):
        d(records('student', feature=f), records('teacher', feature=f), DistillContext(data_samples=samples([0, 1])))
    with pytest.raises(IndexError, match='num_data=5'):
        d(records('student', feature=f), records('teacher', feature=f),
          DistillContext(data_samples=samples([0, 1], sample_idx=[0, 7])))
    out = d(records('student', feature=f.requires_grad_()), records('teacher', feature=f.detach()),
            DistillContext(data_samples=samples([0, 1], sample_idx=[0, 4])))
    out['crd.loss_crd'].backward()
    assert d.embed_s.weight.grad.abs().sum() > 0 and d.embed_t.weight.grad.abs().sum() > 0


def test_rkd_on_a_3_4_5_triangle():
    student = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    teacher = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, math.sqrt(3.0)]], dtype=torch.float64)  # equilateral
    # distances 3, 4, 5 / mean 4 vs all 1: |diff| 0.25, 0, 0.25 (twice each) -> SmoothL1 0.5 d^2, over 9 entries
    l_d = 2 * (0.5 * 0.25 ** 2) * 2 / 9
    # angles: cos at the vertices 0 (right angle), 3/5, 4/5 vs 0.5 -> each twice, over 27 entries
    l_a = 2 * 0.5 * ((0 - 0.5) ** 2 + (0.6 - 0.5) ** 2 + (0.8 - 0.5) ** 2) / 27
    out = RKD()(records('student', feature=student), records('teacher', feature=teacher), DistillContext())
    assert out['rkd.loss_distance'].item() == pytest.approx(25 * l_d, rel=1e-9)
    assert out['rkd.loss_angle'].item() == pytest.approx(50 * l_a, rel=1e-9)


# --- XKD pieces --------------------------------------------------------------------------------------
def test_mmd_by_hand():
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    y = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    k = lambda d2: math.exp(-d2) + math.exp(-0.5 * d2)  # noqa: E731  gammas 1 and 0.5
    kxx = (2 * k(0) + 2 * k(1)) / 4
    kyy = (2 * k(0) + 2 * k(4)) / 4
    kxy = (k(0) + k(4) + k(1) + k(1)) / 4
    assert mmd_loss(x, y, gammas=(1.0, 0.5)).item() == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-9)
    assert mmd_loss(x, x).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match='mmd_loss'):
        mmd_loss(x, torch.zeros(2, 3))


def test_cross_modal_dino_loss_and_centre():
    loss = CrossModalDINOLoss(out_dim=2, teacher_temp=1.0, student_temp=1.0, center_momentum=0.9).double()
    teacher = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]], dtype=torch.float64)  # q = [1/4, 3/4]
    student = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]], dtype=torch.float64)
    # row 0: -(1/4 + 3/4) log 1/2 = log 2; row 1: log_softmax = [log 3/4, log 1/4]
    row1 = -(0.25 * math.log(0.75) + 0.75 * math.log(0.25))
    assert loss(student, teacher).item() == pytest.approx((math.log(2) + row1) / 2, rel=1e-12)
    assert torch.allclose(loss.center, torch.tensor([[0.0, 0.1 * math.log(3.0)]], dtype=torch.float64))
    # the centre is subtracted from the teacher before the softmax: a centre equal to t gives q uniform
    loss.center.copy_(teacher[:1])
    loss.eval()
    assert loss(student[:1], teacher[:1]).item() == pytest.approx(math.log(2), rel=1e-12)


def test_ema_update_and_cosine_momentum():
    t, s = nn.BatchNorm1d(1), nn.BatchNorm1d(1)
    with torch.no_grad():
        t.weight.fill_(1.0)
        s.weight.fill_(3.0)
        s.running_mean.fill_(5.0)
    ema_update(t, s, 0.9)
    assert t.weight.item() == pytest.approx(1.2)
    assert t.running_mean.item() == 5.0  # buffers copied
    assert cosine_momentum(0, 100, 0.997, 1.0) == pytest.approx(0.997)
    assert cosine_momentum(50, 100, 0.997, 1.0) == pytest.approx(0.9985)
    assert cosine_momentum(100, 100, 0.997, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(10, None, 0.997, 1.0) == 0.997
    with pytest.raises(KeyError, match='parameters differ'):
        ema_update(t, nn.Sequential(nn.Linear(1, 1)), 0.5)
    with pytest.raises(ValueError, match='shape'):
        ema_update(t, nn.Linear(1, 1), 0.5)
