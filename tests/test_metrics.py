"Cross-checks of `ssd_fastai.metrics` against pycocotools, faster-coco-eval and a plain VOC devkit `voc_eval`."
import contextlib, io
from types import SimpleNamespace
from fastai.torch_core import to_detach
import numpy as np, pandas as pd, pytest, torch
from ssd_fastai.metrics import *

# ---------------------------------------------------------------- random cases

def _boxes(rng, n, scale=100.):
    xy = rng.uniform(0, scale*.8, (n,2))
    return np.concatenate([xy, xy + rng.uniform(scale*.02, scale*.4, (n,2))], 1)

def _jitter(rng, b, s):
    wh = np.tile(b[:,2:] - b[:,:2], 2)
    b = b + rng.normal(0, 1, b.shape) * s * wh
    return np.concatenate([np.minimum(b[:,:2], b[:,2:]), np.maximum(b[:,:2], b[:,2:])], 1)

def rand_case(seed, n_img=30, n_cls=6, max_gt=6, max_fp=10, p_empty=.2, p_dif=0., p_crowd=0., scale=100.):
    "Per-image dets and gts: jittered copies of objects (duplicates, wrong classes) plus random boxes; class `n_cls` has no gt."
    rng = np.random.default_rng(seed)
    dets,gts = [],[]
    for i in range(n_img):
        m = 0 if rng.random() < p_empty else int(rng.integers(1, max_gt+1))
        gb,gl = _boxes(rng, m, scale),rng.integers(1, n_cls, m)
        near = rng.random(m) < .3                                # crowded scenes: objects overlapping others
        if m > 1: gb[near] = _jitter(rng, gb[rng.integers(0, m, near.sum())], .2)
        u = rng.random(m)
        gts.append(dict(boxes=gb, labels=gl, difficult=u < p_dif, iscrowd=(u >= p_dif) & (u < p_dif+p_crowd)))
        src = rng.integers(0, m, int(rng.integers(0, 2*m+1))) if m else np.zeros(0, int)
        tb = _jitter(rng, gb[src], rng.uniform(.01, .15))
        tl = np.where(rng.random(len(src)) < .9, gl[src], rng.integers(1, n_cls+1, len(src)))
        nf = int(rng.integers(0, max_fp+1))
        dets.append(dict(boxes=np.concatenate([tb, _boxes(rng, nf, scale)]),
                         labels=np.concatenate([tl, rng.integers(1, n_cls+1, nf)]).astype(int),
                         scores=np.concatenate([rng.uniform(.2, 1, len(src)), rng.uniform(0, .8, nf)])))
    return dets,gts

# ---------------------------------------------------------------- references

def _coco_dicts(dets, gts, n_cls):
    "COCO-format ground truth and detections; `difficult` objects get an area outside every range (ignored)."
    imgs = [dict(id=i+1, width=1000, height=1000) for i in range(len(gts))]
    cats = [dict(id=c, name=str(c)) for c in range(1, n_cls+1)]
    def anns(ds, gt):
        res = []
        for i,d in enumerate(ds):
            n = len(d['labels'])
            dif,crowd = d.get('difficult', np.zeros(n, bool)),d.get('iscrowd', np.zeros(n, bool))
            for k,(b,l) in enumerate(zip(np.asarray(d['boxes'], float).reshape(-1,4), d['labels'])):
                w,h = b[2]-b[0],b[3]-b[1]
                a = dict(id=len(res)+1, image_id=i+1, category_id=int(l), bbox=[b[0],b[1],w,h], area=w*h)
                if gt: a.update(iscrowd=int(crowd[k]), area=1e11 if dif[k] else w*h)
                else:  a.update(iscrowd=0, score=float(d['scores'][k]))
                res.append(a)
        return res
    return (dict(images=imgs, categories=cats, annotations=anns(gts, True)),
            dict(images=imgs, categories=cats, annotations=anns(dets, False)))

def coco_ref(dets, gts, n_cls, max_det=100, lib='pycocotools'):
    "Per-class AP (T,K) from pycocotools or faster-coco-eval (NaN for classes without positives) and its stats."
    g,d = _coco_dicts(dets, gts, n_cls)
    with contextlib.redirect_stdout(io.StringIO()):
        if lib == 'pycocotools':
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval as Eval
            cg,cd = COCO(),COCO()
            cg.dataset,cd.dataset = g,d
            cg.createIndex(); cd.createIndex()
        else:
            from faster_coco_eval import COCO, COCOeval_faster as Eval
            cg,cd = COCO(g),COCO(d)
        E = Eval(cg, cd, 'bbox')
        E.params.maxDets = [1, 10, max_det]
        E.evaluate(); E.accumulate(); E.summarize()
    p = E.eval['precision'][:,:,:,0,-1]                          # T,R,K at area 'all', max_det
    ap = np.where((p > -1).all(1), p.mean(1), np.nan)
    return ap,E.stats

def voc_eval_ref(dets, gts, cls, ovthresh=.5, use_07_metric=False):
    "py-faster-rcnn's `voc_eval`, for one class, written plainly, with continuous widths (no +1)."
    recs,npos = {},0
    for i,g in enumerate(gts):
        m = np.asarray(g['labels']) == cls
        dif = np.asarray(g.get('difficult', np.zeros(len(m), bool)), bool)[m]
        npos += (~dif).sum()
        recs[i] = dict(bbox=np.asarray(g['boxes'], float).reshape(-1,4)[m], difficult=dif, det=[False]*int(m.sum()))
    ids,conf,BB = [],[],[]
    for i,d in enumerate(dets):
        m = np.asarray(d['labels']) == cls
        ids += [i]*int(m.sum()); conf += list(np.asarray(d['scores'])[m]); BB += list(np.asarray(d['boxes'], float).reshape(-1,4)[m])
    if npos == 0: return np.nan
    conf,BB = np.array(conf),np.array(BB).reshape(-1,4)
    si = np.argsort(-conf, kind='stable')
    BB,ids = BB[si],[ids[x] for x in si]
    nd = len(ids); tp,fp = np.zeros(nd),np.zeros(nd)
    for k in range(nd):
        R,bb,ovmax = recs[ids[k]],BB[k],-np.inf
        BBGT = R['bbox']
        if BBGT.size > 0:
            iw = np.maximum(np.minimum(BBGT[:,2], bb[2]) - np.maximum(BBGT[:,0], bb[0]), 0.)
            ih = np.maximum(np.minimum(BBGT[:,3], bb[3]) - np.maximum(BBGT[:,1], bb[1]), 0.)
            inters = iw*ih
            uni = (bb[2]-bb[0])*(bb[3]-bb[1]) + (BBGT[:,2]-BBGT[:,0])*(BBGT[:,3]-BBGT[:,1]) - inters
            ov = inters/uni
            ovmax,jmax = np.max(ov),np.argmax(ov)
        if ovmax > ovthresh:
            if not R['difficult'][jmax]:
                if not R['det'][jmax]: tp[k] = 1.; R['det'][jmax] = True
                else: fp[k] = 1.
        else: fp[k] = 1.
    fp,tp = np.cumsum(fp),np.cumsum(tp)
    rec = tp/float(npos)
    prec = tp/np.maximum(tp+fp, np.finfo(np.float64).eps)
    if use_07_metric:
        ap = 0.
        for t in np.arange(0., 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p/11.
        return ap
    mrec,mpre = np.concatenate(([0.], rec, [1.])),np.concatenate(([0.], prec, [0.]))
    for i in range(mpre.size-1, 0, -1): mpre[i-1] = np.maximum(mpre[i-1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i+1] - mrec[i]) * mpre[i+1])

def _ours(dets, gts, n_cls, max_det=100):
    "Our per-class AP as (T,K) over classes 1..n_cls."
    return coco_ap(dets, gts, max_det=max_det).reindex(range(1, n_cls+1)).to_numpy().T

def _close(a, b, eps=1e-4):
    a,b = np.asarray(a, float),np.asarray(b, float)
    assert (np.isnan(a) == np.isnan(b)).all(), (a, b)
    np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], atol=eps)

# ---------------------------------------------------------------- COCO

@pytest.mark.parametrize('seed', range(12))
def test_coco_random_vs_pycocotools(seed):
    dets,gts = rand_case(seed, p_crowd=.15 if seed%2 else 0., max_fp=3 if seed%3 else 30)
    ref,stats = coco_ref(dets, gts, 6)
    _close(_ours(dets, gts, 6), ref)
    r = evaluate_detections(dets, gts)
    _close([r['AP'], r['AP50'], r['AP75']], stats[:3])

@pytest.mark.parametrize('seed', range(6))
def test_coco_random_vs_faster_coco_eval(seed):
    dets,gts = rand_case(100+seed, n_img=40, p_crowd=.1)
    ref,stats = coco_ref(dets, gts, 6, lib='faster_coco_eval')
    _close(_ours(dets, gts, 6), ref)

def test_uniform_random_boxes():
    "Detections unrelated to the objects: few matches, AP near 0, still the same numbers."
    rng = np.random.default_rng(0)
    gts = [dict(boxes=_boxes(rng, 4), labels=rng.integers(1, 4, 4)) for _ in range(50)]
    dets = [dict(boxes=_boxes(rng, 30), labels=rng.integers(1, 5, 30), scores=rng.random(30)) for _ in range(50)]
    _close(_ours(dets, gts, 4), coco_ref(dets, gts, 4)[0])

def test_difficult_in_coco_mode():
    "`difficult` objects are ignored like pycocotools' out-of-area-range objects."
    for seed in range(4):
        dets,gts = rand_case(200+seed, p_dif=.25, p_crowd=.1)
        _close(_ours(dets, gts, 6), coco_ref(dets, gts, 6)[0])

def test_max_det():
    "More than `max_det` detections in one image and class: only the best are used, per image *and class*."
    rng = np.random.default_rng(1)
    gts = [dict(boxes=_boxes(rng, 30), labels=rng.integers(1, 3, 30)) for _ in range(5)]
    dets = [dict(boxes=np.concatenate([_jitter(rng, g['boxes'], .2)]*8), labels=np.tile(g['labels'], 8),
                 scores=rng.random(240)) for g in gts]
    for md in (10, 100):
        _close(_ours(dets, gts, 2, md), coco_ref(dets, gts, 2, md)[0])

def test_score_ties():
    "Equal scores keep image order, then input order, as pycocotools' stable sorts."
    for seed in range(4):
        dets,gts = rand_case(300+seed)
        for d in dets: d['scores'] = np.round(d['scores']*3)/3
        _close(_ours(dets, gts, 6), coco_ref(dets, gts, 6)[0])

def test_equal_ious():
    "A detection exactly between two objects takes the later one, as pycocotools, which changes what comes next."
    gts = [dict(boxes=[[0,0,10,10], [5,0,15,10]], labels=[1,1])]
    dets = [dict(boxes=[[2.5,0,12.5,10], [5,0,15,10]], labels=[1,1], scores=[.9,.8])]
    m = match_detections(dets, gts, [.5])
    assert m.tp.tolist() == [[True, False]]
    _close(_ours(dets, gts, 1), coco_ref(dets, gts, 1)[0])
    for seed in range(3):                                        # objects annotated twice
        dets,gts = rand_case(700+seed, p_crowd=.1, p_dif=.1)
        for g in gts: g.update({n: np.concatenate([v, v[::2]]) for n,v in g.items()})
        _close(_ours(dets, gts, 6), coco_ref(dets, gts, 6)[0])

def test_empty_and_missing():
    rng = np.random.default_rng(2)
    gts = [dict(boxes=_boxes(rng, 3), labels=np.array([1, 1, 2])), dict(boxes=np.zeros((0,4)), labels=[])]
    none = [dict(boxes=np.zeros((0,4)), labels=np.zeros(0, int), scores=np.zeros(0)) for _ in gts]
    r = evaluate_detections(none, gts)
    assert all(r[k] == 0 for k in ('AP','AP50','AP75','VOC07','VOC'))
    test = evaluate_detections([], [])
    assert np.isnan(test['AP']) and len(test['per_class']) == 0
    # images without objects and without detections at all, torch tensors, a class only predicted
    dets = [dict(boxes=torch.tensor(gts[0]['boxes']), labels=torch.tensor([1, 1, 3]), scores=torch.tensor([.9, .1, .5])),
            dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long), scores=torch.zeros(0))]
    r = evaluate_detections(dets, gts, vocab=['#na#', 'a', 'b', 'c', 'd'])
    pc = r['per_class']
    assert list(pc['class']) == ['a', 'b', 'c', 'd'] and list(pc['n_gt']) == [2, 1, 0, 0] and list(pc['n_det']) == [2, 0, 1, 0]
    assert pc.loc[1, 'AP'] == 1 and pc.loc[2, 'AP'] == 0 and np.isnan(pc.loc[3, 'AP'])
    assert r['AP'] == .5                                        # mean over the classes with objects only

def test_scale_invariance_and_input_types():
    dets,gts = rand_case(7, p_crowd=.1, p_dif=.1)
    r = evaluate_detections(dets, gts)
    sc = lambda ds: [{**d, 'boxes': torch.tensor(d['boxes']/50. - 1)} for d in ds]
    r2 = evaluate_detections(sc(dets), sc(gts))
    for k in ('AP','AP50','AP75','VOC07','VOC'): assert abs(r[k] - r2[k]) < 1e-9
    r3 = evaluate_detections([{k:(v.tolist() if hasattr(v, 'tolist') else v) for k,v in d.items()} for d in dets], gts)
    assert r3['AP'] == r['AP']

def test_background_rows_dropped():
    dets,gts = rand_case(8)
    d0 = [dict(boxes=np.concatenate([d['boxes'], _boxes(np.random.default_rng(0), 2)]),
               labels=np.concatenate([d['labels'], [0, 0]]), scores=np.concatenate([d['scores'], [1., 1.]])) for d in dets]
    g0 = [dict(boxes=np.concatenate([g['boxes'], np.full((3,4), 7.)]), labels=np.concatenate([g['labels'], [0, 0, 0]])) for g in gts]
    assert evaluate_detections(d0, g0)['per_class'].equals(evaluate_detections(dets, gts)['per_class'])

def test_chunked_matching():
    "A tiny memory budget splits the image-classes into many chunks without changing anything."
    import ssd_fastai.metrics as M
    dets,gts = rand_case(9, n_img=60, p_crowd=.1, p_dif=.1)
    full = M.match_detections(dets, gts)
    old = M._greedy.__defaults__
    try:
        M._greedy.__defaults__ = (50,)
        small = M.match_detections(dets, gts)
    finally: M._greedy.__defaults__ = old
    assert (full.tp == small.tp).all() and (full.ign == small.ign).all()

# ---------------------------------------------------------------- VOC

@pytest.mark.parametrize('seed', range(10))
def test_voc_vs_voc_eval(seed):
    dets,gts = rand_case(400+seed, p_dif=.2 if seed%2 else 0.)
    for use07 in (True, False):
        ours = voc_ap(dets, gts, .5, use07).reindex(range(1, 7))
        ref = [voc_eval_ref(dets, gts, c, .5, use07) for c in range(1, 7)]
        _close(ours, ref, 1e-9)
    r = evaluate_detections(dets, gts)
    _close([r['VOC07'], r['VOC']], [np.nanmean([voc_eval_ref(dets, gts, c, .5, u) for c in range(1, 7)]) for u in (True, False)], 1e-9)

def test_voc_other_threshold():
    dets,gts = rand_case(500, p_dif=.1)
    _close(voc_ap(dets, gts, .7).reindex(range(1, 7)), [voc_eval_ref(dets, gts, c, .7) for c in range(1, 7)], 1e-9)

def test_ap_functions():
    rec,prec = np.array([.5, .5, 1.]),np.array([1., .5, 2/3])
    assert abs(ap_area(rec, prec) - (.5 + .5*2/3)) < 1e-12
    assert abs(ap_11pt(rec, prec) - (6 + 5*2/3)/11) < 1e-12
    assert abs(ap_101pt(rec, prec) - (51 + 50*2/3)/101) < 1e-12
    assert ap_area(np.zeros(0), np.zeros(0)) == ap_11pt(np.zeros(0), np.zeros(0)) == 0

# ---------------------------------------------------------------- MeanAP

class FakeLoss:
    "Stands in for `SSDLoss`: `activation` is the identity, `decodes` returns the detections padded to K with label 0."
    def activation(self, p): return p
    def decodes(self, p): return p

def _batches(dets, gts, bs=4, K=12, M=8):
    "Fake learners (pred, yb) over `dets`/`gts` padded like the library's batches (label 0 = empty)."
    rng = np.random.default_rng(0)
    for s in range(0, len(gts), bs):
        n = len(gts[s:s+bs])
        boxes,labels,scores = torch.rand(n,K,4),torch.zeros(n,K, dtype=torch.long),torch.rand(n,K)
        bb,lbl = torch.rand(n,M,4)*100,torch.zeros(n,M, dtype=torch.long)
        for i,(d,g) in enumerate(zip(dets[s:s+bs], gts[s:s+bs])):
            k,m = len(d['labels']),len(g['labels'])
            ki,mi = rng.permutation(K)[:k],rng.permutation(M)[:m]       # valid rows anywhere among padding
            boxes[i,ki],labels[i,ki],scores[i,ki] = torch.tensor(d['boxes']).float(),torch.tensor(d['labels']),torch.tensor(d['scores']).float()
            bb[i,mi],lbl[i,mi] = torch.tensor(g['boxes']).float(),torch.tensor(g['labels'])
        yield SimpleNamespace(pred=(boxes, labels, scores), yb=(bb, lbl), loss_func=FakeLoss(), to_detach=to_detach)

def test_mean_ap_metric():
    dets,gts = rand_case(600, n_img=22, max_gt=6, max_fp=0)
    for d in dets: d['boxes'],d['labels'],d['scores'] = d['boxes'][:12],d['labels'][:12],d['scores'][:12]
    f32 = lambda ds: [{k:(v.astype(np.float32) if v.dtype == np.float64 else v) for k,v in d.items()} for d in ds]
    dets,gts = f32(dets),[{k:v for k,v in g.items() if k == 'boxes' or k == 'labels'} for g in f32(gts)]
    r = evaluate_detections(dets, gts)
    for iou,key,name in [('coco','AP','mAP'), ('50','AP50','mAP50'), ('75','AP75','mAP75'), ('voc07','VOC07','mAP_voc07'), ('voc','VOC','mAP_voc')]:
        m = MeanAP(iou)
        assert m.name == name
        for _ in range(2):                                       # reset works: two epochs, same value
            m.reset()
            for learn in _batches(dets, gts): m.accumulate(learn)
            assert abs(m.value - r[key]) < 1e-6, (iou, m.value, r[key])
    with pytest.raises(AssertionError): MeanAP('90')
