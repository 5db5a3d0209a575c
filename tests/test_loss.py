"Tests of `ssd_fastai.loss` beyond the notebook: batched == per-image on many random cases, numerics, plugins, fastai."
import pickle
import pytest, torch
import torch.nn.functional as F
import torchvision.ops as tvo
from hypothesis import given, settings, strategies as st
from ssd_fastai.boxes import cxcywh2xyxy, box_iou
from ssd_fastai.anchors import anchor_boxes, SSDCoder, TanhCoder, LESSON_ZOOMS
from ssd_fastai.loss import *
from conftest import fp16_cpu_autocast

ANC = anchor_boxes([4,2,1], LESSON_ZOOMS)   # the lesson's 189 anchors, cxcywh
ANC_XYXY = cxcywh2xyxy(ANC)

def rand_boxes(*shape, g=None, min_sz=0.):
    "Random scaled xyxy boxes `(*shape,4)` (sides at least `min_sz`)."
    p = torch.rand(*shape, 4, generator=g)*2-1
    lo,hi = torch.min(p[...,:2], p[...,2:]), torch.max(p[...,:2], p[...,2:])
    return torch.cat([lo, torch.max(hi, lo+min_sz)], -1)

@st.composite
def batches(draw, max_b=6, max_m=30, n_cls=5):
    "A padded batch `(bb, lbl)`: 0..`max_m` object slots, padding anywhere with garbage coordinates, ties, duplicates."
    B,M = draw(st.integers(1, max_b)), draw(st.integers(0, max_m))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    bb = rand_boxes(B, M, g=g)
    if draw(st.booleans()): bb = (bb*4).round()/4                      # coarse grid: exact IoU ties
    lbl = torch.randint(0, n_cls+1, (B,M), generator=g)
    if draw(st.booleans()): lbl[draw(st.integers(0, B-1))] = 0          # an empty image
    if M>1 and draw(st.booleans()): bb[:,-1],lbl[:,-1] = bb[:,0],lbl[:,0]   # duplicated objects
    return bb,lbl

anchor_sets = st.sampled_from([(4,), (4,2,1), (7,4,2,1), ((3,5),(2,3),1)])

def zoomratio(grids): return anchor_boxes(grids, LESSON_ZOOMS) if len(grids)<4 else anchor_boxes(grids, zooms=(1.,), ratios=((1.,1.),(1.,.5)))

# --- matching ---------------------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(batches(), st.floats(0.1, 0.9), st.booleans(), anchor_sets, st.sampled_from([None, 1, 2, 100]))
def test_match_equals_loop(b, iou_thresh, force, grids, chunk):
    bb,lbl = b
    anc = zoomratio(grids)
    idx,pos = match_anchors(anc, bb, lbl, iou_thresh, force, chunk)
    idx_l,pos_l = match_anchors_loop(anc, bb, lbl, iou_thresh, force)
    assert torch.equal(pos, pos_l)
    assert torch.equal(idx[pos], idx_l[pos])
    if lbl.shape[1]: assert (lbl.gather(1, idx)[pos] > 0).all()        # never matched to padding
    assert not pos[(lbl>0).sum(1)==0].any()                               # empty images are all background


@settings(max_examples=100, deadline=None)
@given(batches(), st.sampled_from([0.4, 0.5]), anchor_sets)
def test_anchor_coverage(b, iou_thresh, grids):
    "`anchor_coverage` equals a count object by object, with torchvision's IoU and the per-image matcher."
    bb,lbl = b
    if not (lbl>0).any(): return
    anc = anchor_boxes(grids, LESSON_ZOOMS)
    c = anchor_coverage(anc, bb, lbl, iou_thresh)
    idx,pos = match_anchors_loop(anc, bb, lbl, iou_thresh)
    best,npos = [],[]
    for i,m in (lbl>0).nonzero().tolist():
        best.append(tvo.box_iou(bb[i,m][None], cxcywh2xyxy(anc)).max().item())
        npos.append(((idx[i]==m) & pos[i]).sum().item())
    best = torch.tensor(best)
    assert c['covered']==pytest.approx((best>=iou_thresh).float().mean().item())
    assert c['best_iou']==pytest.approx(best.mean().item(), abs=1e-6)
    assert c['pos_per_obj']==pytest.approx(sum(npos)/len(npos))

def test_match_rules():
    "Forcing, threshold, padding garbage, duplicates: each object gets its best anchor, the last duplicate wins it."
    bb = torch.tensor([[[-1., -1, 0, 0], [-1, -1, 0, 0], [5, 5, 9, 9], [0.1, 0.1, 0.2, 0.2]]])
    lbl = torch.tensor([[1, 2, 0, 3]])
    idx,pos = match_anchors(ANC, bb, lbl)
    ious = box_iou(ANC_XYXY, bb[0])
    best = ious.argmax(0)
    assert idx[0, best[0]] == 1 and pos[0, best[0]]                        # duplicate: the last one takes it
    assert idx[0, best[3]] == 3 and pos[0, best[3]]                        # forced despite a low IoU
    assert ious[best[3], 3] < 0.5
    assert (idx[pos] != 2).all()                                           # padding never matched
    pos_nf = match_anchors(ANC, bb, lbl, force=False)[1]
    assert not pos_nf[0, best[3]]
    assert torch.equal(pos_nf[0], (ious[:, [0,1,3]].max(1).values >= 0.5))

def test_match_degenerate_and_empty():
    bb = torch.tensor([[[0.3, 0.3, 0.3, 0.8]]])                            # zero area: matched nowhere
    assert not match_anchors(ANC, bb, torch.tensor([[1]]))[1].any()
    idx,pos = match_anchors(ANC, torch.zeros(3, 0, 4), torch.zeros(3, 0, dtype=torch.long))
    assert idx.shape == (3, 189) and not pos.any()

def test_match_many_objects():
    "More objects than anchors: every anchor can be forced, still equal to the loop."
    g = torch.Generator().manual_seed(0)
    anc = anchor_boxes([4], zooms=(1.,), ratios=((1.,1.),))
    bb,lbl = rand_boxes(2, 200, g=g, min_sz=0.05), torch.randint(1, 4, (2, 200), generator=g)
    idx,pos = match_anchors(anc, bb, lbl)
    idx_l,pos_l = match_anchors_loop(anc, bb, lbl)
    assert torch.equal(pos, pos_l) and torch.equal(idx[pos], idx_l[pos]) and pos.all()

# --- classification losses --------------------------------------------------------------------------------------

@pytest.mark.parametrize('gamma,alpha', [(2., 0.25), (1., 0.5), (0., -1.), (3., 0.9)])
def test_focal_equals_torchvision(gamma, alpha):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(4, 50, 7, generator=g)*4).double().requires_grad_()
    t = torch.randint(0, 8, (4, 50), generator=g)
    focal = SigmoidFocalLoss(gamma, alpha)
    ours = focal(x.float(), t)
    ref = tvo.sigmoid_focal_loss(x.float(), one_hot_nobg(t, 7), alpha, gamma, reduction='none').sum(-1)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    # same gradients, in double precision
    g1, = torch.autograd.grad(focal(x, t).sum(), x)
    g2, = torch.autograd.grad(tvo.sigmoid_focal_loss(x, one_hot_nobg(t, 7).double(), alpha, gamma, reduction='sum'), x)
    torch.testing.assert_close(g1.double(), g2, rtol=1e-5, atol=1e-6)

def test_bce_equals_torch():
    x, t = torch.randn(3, 40, 5)*5, torch.randint(0, 6, (3, 40))
    ref = F.binary_cross_entropy_with_logits(x, one_hot_nobg(t, 5), reduction='none').sum(-1)
    torch.testing.assert_close(SigmoidBCELoss()(x, t), ref)

@pytest.mark.parametrize('f', [SigmoidFocalLoss(), SigmoidBCELoss()], ids=['focal', 'bce'])
def test_extreme_logits(f):
    x = (torch.randint(0, 2, (2, 30, 4))*2-1)*1e4
    x = x.float().requires_grad_()
    t = torch.randint(0, 5, (2, 30))
    l = f(x, t)
    l.sum().backward()
    assert l.isfinite().all() and x.grad.isfinite().all()
    ref = tvo.sigmoid_focal_loss(x.detach(), one_hot_nobg(t, 4), reduction='none').sum(-1) if isinstance(f, SigmoidFocalLoss) else \
          F.binary_cross_entropy_with_logits(x.detach(), one_hot_nobg(t, 4), reduction='none').sum(-1)
    torch.testing.assert_close(l, ref)

def test_hard_negatives():
    g = torch.Generator().manual_seed(0)
    loss, pos = torch.rand(5, 189, generator=g), torch.rand(5, 189, generator=g) < 0.03
    pos[0] = False
    neg = hard_negatives(loss, pos, 3)
    assert not (neg & pos).any()
    assert torch.equal(neg.sum(1), (3*pos.sum(1).clamp(min=1)).clamp(max=189-pos.sum(1)))
    for i in range(5):   # the kept negatives are the hardest ones
        assert loss[i][neg[i]].min() >= loss[i][~pos[i] & ~neg[i]].max()

# --- SSDLoss ----------------------------------------------------------------------------------------------------

def rand_preds(B, anc=ANC, n_cls=5, g=None, scale=3.):
    return (torch.randn(B, len(anc), n_cls, generator=g)*scale, torch.randn(B, len(anc), 4, generator=g), anc.expand(B, -1, -1))

@settings(max_examples=150, deadline=None)
@given(batches(max_b=4, max_m=20), st.sampled_from(['focal', 'bce']), st.sampled_from(['smooth_l1', 'l1']),
       st.sampled_from([None, 3.]), st.sampled_from([0.5, 0.4]), st.booleans(), st.sampled_from(['ssd', 'tanh']),
       st.floats(0.1, 10), st.integers(0, 2**31))
def test_loss_equals_loop(b, cl, ll, neg_ratio, iou_thresh, force, coder, clas_w, seed):
    bb,lbl = b
    bb = torch.cat([bb[...,:2], torch.max(bb[...,2:], bb[...,:2]+0.01)], -1)   # objects have a size
    coder = SSDCoder() if coder=='ssd' else TanhCoder()
    preds = rand_preds(len(bb), g=torch.Generator().manual_seed(seed))
    kw = dict(clas_loss=cl, loc_loss=ll, neg_ratio=neg_ratio, iou_thresh=iou_thresh, force=force, clas_w=clas_w)
    loss = SSDLoss(coder, **kw)(preds, bb, lbl)
    torch.testing.assert_close(loss, ssd_loss_loop(preds, bb, lbl, coder, **kw), rtol=1e-4, atol=1e-4)

def _finite(loss_func, preds, bb, lbl, dtype=None):
    clas,box = [p.clone().requires_grad_() for p in preds[:2]]
    with torch.autocast('cpu', dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        out = loss_func((clas*1, box*1, preds[2]), bb, lbl)   # activations in half precision under autocast
    out.backward()
    return bool(out.isfinite() and clas.grad.isfinite().all() and box.grad.isfinite().all())

dtypes = [None, torch.bfloat16] + ([torch.float16] if fp16_cpu_autocast() else [])

@pytest.mark.parametrize('dtype', dtypes)
@pytest.mark.parametrize('kw', [{}, dict(clas_loss='bce', loc_loss='l1'), dict(neg_ratio=3.), dict(coder=TanhCoder())])
def test_numerics(dtype, kw):
    g = torch.Generator().manual_seed(0)
    lf = SSDLoss(**kw)
    bb,lbl = rand_boxes(4, 12, g=g, min_sz=0.02), torch.randint(0, 6, (4, 12), generator=g)
    clas,box,anc = rand_preds(4, g=g)
    big = ((torch.rand_like(clas)<0.5).float()*2-1)*1e4
    assert _finite(lf, (big, box*100, anc), bb, lbl, dtype)                       # extreme activations
    assert _finite(lf, (clas, box, anc), bb, lbl*0, dtype)                        # only empty images
    assert _finite(lf, (clas, box, anc), bb[:,:0], lbl[:,:0], dtype)              # no object slot at all
    many,lm = rand_boxes(4, 200, g=g, min_sz=0.01), torch.randint(1, 6, (4, 200), generator=g)
    assert _finite(lf, (clas, box, anc), many, lm, dtype)                         # more objects than anchors

def test_loss_many_objects_equals_loop():
    g = torch.Generator().manual_seed(3)
    bb,lbl = rand_boxes(3, 200, g=g, min_sz=0.02), torch.randint(1, 6, (3, 200), generator=g)
    preds = rand_preds(3, g=g)
    torch.testing.assert_close(SSDLoss(SSDCoder())(preds, bb, lbl), ssd_loss_loop(preds, bb, lbl, SSDCoder()))

def test_empty_batch_is_background_only():
    preds = rand_preds(2)
    lf = SSDLoss()
    loss = lf(preds, torch.rand(2, 3, 4), torch.zeros(2, 3, dtype=torch.long))
    torch.testing.assert_close(loss, SigmoidFocalLoss()(preds[0], torch.zeros(2, 189, dtype=torch.long)).sum())
    assert lf.parts['loc'] == 0 and lf.parts['npos'].sum() == 0

def test_reductions_and_parts():
    g = torch.Generator().manual_seed(0)
    preds, bb, lbl = rand_preds(3, g=g), rand_boxes(3, 5, g=g, min_sz=0.05), torch.randint(0, 6, (3, 5), generator=g)
    lf = SSDLoss(clas_w=2., loc_w=0.5)
    loss = lf(preds, bb, lbl)
    torch.testing.assert_close(loss, 2*lf.parts['clas'] + 0.5*lf.parts['loc'])
    assert lf.parts['npos'].shape == (3,) and not lf.parts['clas'].requires_grad
    torch.testing.assert_close(SSDLoss(clas_w=2., loc_w=0.5, reduction='none')(preds, bb, lbl).mean(), loss)
    torch.testing.assert_close(SSDLoss(clas_w=2., loc_w=0.5, reduction='sum')(preds, bb, lbl), loss*3)

def test_fastai_tensor_types():
    from fastai.vision.core import TensorBBox, TensorMultiCategory
    g = torch.Generator().manual_seed(0)
    preds, bb, lbl = rand_preds(2, g=g), rand_boxes(2, 4, g=g, min_sz=0.05), torch.randint(0, 6, (2, 4), generator=g)
    loss = SSDLoss()(preds, TensorBBox(bb), TensorMultiCategory(lbl))
    assert type(loss) is torch.Tensor
    torch.testing.assert_close(loss, SSDLoss()(preds, bb, lbl))

def test_plugins():
    "A custom matcher, classification loss and localisation loss are used as given."
    calls = []
    def my_matcher(anc, bb, lbl):
        calls.append(anc.shape)
        return match_anchors(anc, bb, lbl, iou_thresh=0.3)
    g = torch.Generator().manual_seed(0)
    preds, bb, lbl = rand_preds(2, g=g), rand_boxes(2, 4, g=g, min_sz=0.05), torch.randint(0, 6, (2, 4), generator=g)
    l1 = SSDLoss(matcher=my_matcher, clas_loss=lambda x,t: SigmoidBCELoss()(x, t)*2, loc_loss=lambda p,t: (p-t).abs().sum(-1))(preds, bb, lbl)
    l2 = ssd_loss_loop(preds, bb, lbl, SSDCoder(), 'bce', 'l1', iou_thresh=0.3, clas_w=2.)
    torch.testing.assert_close(l1, l2)
    assert calls == [(189, 4)]

def test_pickle():
    lf = SSDLoss(TanhCoder(), 'bce', 'l1', neg_ratio=3.)
    lf(rand_preds(2), rand_boxes(2, 3, min_sz=0.05), torch.ones(2, 3, dtype=torch.long))
    lf2 = pickle.loads(pickle.dumps(lf))
    assert isinstance(lf2.clas_func, SigmoidBCELoss) and lf2.neg_ratio == 3. and lf2.decoder.max_det == lf.decoder.max_det
    pickle.loads(pickle.dumps(LargestObjectLoss()))

# --- fastai integration -----------------------------------------------------------------------------------------

def _tiny_learner(loss_func, metrics, n=12, bs=4, **kwargs):
    from torch.utils.data import TensorDataset
    from fastai.data.core import DataLoaders, TfmdDL
    from fastai.learner import Learner
    import torch.nn as nn
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.clas,self.box = nn.Parameter(torch.zeros(189, 5)),nn.Parameter(torch.zeros(189, 4))
        def forward(self, x):
            B = x.shape[0]
            return self.clas.expand(B,-1,-1), self.box.expand(B,-1,-1), ANC.expand(B,-1,-1)
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.zeros(n, 1), rand_boxes(n, 6, g=g, min_sz=0.05), torch.randint(0, 6, (n, 6), generator=g))
    ds.n_inp = 1
    dls = DataLoaders(TfmdDL(ds, bs=bs), TfmdDL(ds, bs=bs))
    return Learner(dls, Tiny(), loss_func=loss_func, metrics=metrics, **kwargs), ds

def test_metrics_in_learner():
    from fastai.learner import Recorder
    learn, ds = _tiny_learner(SSDLoss(), [clas_loss, loc_loss, pos_per_img], n=10, bs=4)   # last batch smaller
    learn.recorder.train_metrics = True
    with learn.no_logging(): learn.fit(1, 0.05)
    names = list(learn.recorder.metric_names)
    for n in ['train_clas_loss', 'valid_clas_loss', 'valid_loc_loss', 'valid_pos_per_img']: assert n in names
    vals = dict(zip(names[1:], learn.recorder.values[-1]))
    torch.testing.assert_close(vals['valid_clas_loss'] + vals['valid_loc_loss'], vals['valid_loss'], rtol=1e-4, atol=1e-4)
    npos = match_anchors(ANC, ds.tensors[1], ds.tensors[2])[1].sum()
    torch.testing.assert_close(vals['valid_pos_per_img'], npos.item()/10)
    preds, targs, losses = learn.get_preds(with_loss=True)   # reduction='none' is honoured
    assert losses.shape == (10,)

def test_largest_object_loss_and_metrics():
    from fastai.learner import AvgMetric
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(6, 4+3, generator=g)
    bb, lbl = rand_boxes(6, 1, g=g, min_sz=0.1), torch.randint(1, 4, (6, 1), generator=g)
    lf = LargestObjectLoss(bb_w=3., clas_w=2.)
    box = torch.sigmoid(pred[:,:4])*2-1
    ref = 3*(box-bb[:,0]).abs().mean() + 2*F.cross_entropy(pred[:,4:], lbl[:,0]-1)
    for b,l in [(bb, lbl), (bb[:,0], lbl[:,0]), (bb[:,0], lbl), (bb, lbl[:,0])]:
        torch.testing.assert_close(lf(pred, b, l), ref)
    torch.testing.assert_close(detn_l1(pred, bb, lbl), (box-bb[:,0]).abs().mean())
    torch.testing.assert_close(detn_acc(pred, bb, lbl), (pred[:,4:].argmax(1)+1 == lbl[:,0]).float().mean())
    assert AvgMetric(detn_acc).name == 'detn_acc'

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_cuda_equals_cpu():
    g = torch.Generator().manual_seed(0)
    anc = anchor_boxes([28,14,7,4,2,1], LESSON_ZOOMS)
    preds, bb, lbl = rand_preds(8, anc, g=g), rand_boxes(8, 30, g=g, min_sz=0.02), torch.randint(0, 6, (8, 30), generator=g)
    cpu = SSDLoss()(preds, bb, lbl)
    gpu = SSDLoss()([p.cuda() for p in preds], bb.cuda(), lbl.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)

def test_anchors_without_batch_dim():
    g = torch.Generator().manual_seed(0)
    preds, bb, lbl = rand_preds(2, g=g), rand_boxes(2, 4, g=g, min_sz=0.05), torch.randint(0, 6, (2, 4), generator=g)
    torch.testing.assert_close(SSDLoss()((preds[0], preds[1], ANC), bb, lbl), SSDLoss()(preds, bb, lbl))

def test_loss_part_needs_parts():
    learn, _ = _tiny_learner(lambda p, bb, lbl: p[0].mean()*0 + 1., [clas_loss])
    with pytest.raises(KeyError, match="keeps no part 'clas'"):
        with learn.no_logging(): learn.fit(1)

def test_largest_object_loss_skips_an_image_whose_object_was_cropped_out():
    "An augmentation can crop the object out (label 0): that image costs nothing, and the others' mean is unchanged."
    torch.manual_seed(0)
    pred, bb, lbl = torch.randn(4, 4+5), torch.rand(4, 1, 4)*2-1, torch.tensor([[1], [3], [0], [5]])
    lf = LargestObjectLoss()
    loss = lf(pred, bb, lbl)
    keep = lbl[:, 0] > 0
    torch.testing.assert_close(loss, lf(pred[keep], bb[keep], lbl[keep]))
    assert lf(pred, bb, lbl*0) == 0
