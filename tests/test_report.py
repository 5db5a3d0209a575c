"""The detection confusion matrix on many random cases, against references that share no code with it: the library's
COCO matching (itself checked against pycocotools) with the classes ignored, the counts every object and detection
must end up in, and Ultralytics' own `ConfusionMatrix` where it is installed. The hand-made cases are in
nbs/05a_report.ipynb."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from ssd_fastai.metrics import match_detections
from ssd_fastai.report import confusion_matrix, plot_pr_curves

def _boxes(rng, n, lo=0, hi=60):
    xy = rng.uniform(lo, hi, (n,2))
    return np.concatenate([xy, xy + rng.uniform(3, 30, (n,2))], 1)

def random_images(seed, n_img=60, n_cls=3, max_obj=8, p_difficult=0.):
    "Objects, and detections near them (some of the wrong class, some twice) or anywhere, with random scores."
    rng = np.random.default_rng(seed)
    dets,gts = [],[]
    for _ in range(n_img):
        m = int(rng.integers(0, max_obj+1))
        gb,gl = _boxes(rng, m),rng.integers(1, n_cls+1, m)
        src = rng.integers(0, m, int(rng.integers(0, 2*m+1))) if m else np.zeros(0, int)
        near = gb[src] + rng.normal(0, .2, (len(src),4))*np.tile(gb[src,2:]-gb[src,:2], 2)
        k = int(rng.integers(0, 5))
        db = np.concatenate([near, _boxes(rng, k)])
        dl = np.concatenate([np.where(rng.random(len(src)) < .3, rng.integers(1, n_cls+1, len(src)), gl[src]), rng.integers(1, n_cls+1, k)])
        dets.append(dict(boxes=db, labels=dl, scores=rng.random(len(db))))
        gts.append(dict(boxes=gb, labels=gl, difficult=rng.random(m) < p_difficult))
    return dets,gts

def agnostic(ds, score_thresh=None):
    "The same images with every label 1 (and, for detections, only the scores above `score_thresh`)."
    res = []
    for d in ds:
        k = np.ones(len(d['labels']), bool) if score_thresh is None else d['scores'] > score_thresh
        res.append({**{n:np.asarray(v)[k] for n,v in d.items()}, 'labels': np.ones(k.sum(), int)})
    return res

@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32-1), iou=st.floats(.1, .9), score=st.floats(0, .9))
def test_hits_are_coco_matches_without_classes(seed, iou, score):
    "Greedy claims by score = COCO's matching of one class: the matched cells add up to its true positives."
    dets,gts = random_images(seed)
    cm = confusion_matrix(dets, gts, 3, iou, score)
    tp = int(match_detections(agnostic(dets, score), agnostic(gts), [iou], 'coco', None).tp.sum())
    n_obj,n_det = sum(len(g['labels']) for g in gts),sum(int((d['scores'] > score).sum()) for d in dets)
    assert cm[1:,1:].sum() == tp
    assert cm[0,1:].sum() == n_obj - tp and cm[1:,0].sum() == n_det - tp
    assert cm[0,0] == 0

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32-1))
def test_every_object_and_detection_counted_once(seed):
    "Each class's column holds its objects that count; each class's row its detections, less those claiming a difficult object."
    dets,gts = random_images(seed, p_difficult=.2)
    cm = confusion_matrix(dets, gts, 3)
    for c in (1,2,3):
        assert cm[:,c].sum() == sum(int(((g['labels'] == c) & ~g['difficult']).sum()) for g in gts)
    flat = confusion_matrix(dets, [{**g, 'difficult': np.zeros(len(g['labels']), bool)} for g in gts], 3)
    for c in (1,2,3):
        assert cm[c].sum() <= flat[c].sum() == sum(int(((d['labels'] == c) & (d['scores'] > .25)).sum()) for d in dets)

def test_order_of_detections_does_not_matter():
    dets,gts = random_images(0)
    rng = np.random.default_rng(1)
    shuffled = [{k:np.asarray(v)[o] for k,v in d.items()} for d in dets for o in [rng.permutation(len(d['labels']))]]
    np.testing.assert_array_equal(confusion_matrix(shuffled, gts, 3), confusion_matrix(dets, gts, 3))

def test_crowded_images_in_chunks():
    "Images with hundreds of objects and detections, matched two images at a time or all at once."
    dets,gts = random_images(2, n_img=9, max_obj=300)
    cm = confusion_matrix(dets, gts, 3)
    np.testing.assert_array_equal(confusion_matrix(dets, gts, 3, chunk=2), cm)
    tp = int(match_detections(agnostic(dets, .25), agnostic(gts), [.5], 'coco', None).tp.sum())
    assert cm[1:,1:].sum() == tp > 300

def test_tensor_inputs():
    "What `MeanAP` keeps (numpy) or a decoder returns (tensors) give the same counts."
    dets,gts = random_images(3)
    tens = lambda ds: [{k:torch.as_tensor(np.asarray(v)) for k,v in d.items()} for d in ds]
    np.testing.assert_array_equal(confusion_matrix(tens(dets), tens(gts), 3), confusion_matrix(dets, gts, 3))

def test_against_ultralytics():
    "Ultralytics' `ConfusionMatrix` (background last, 0-based classes) on the same images, where it is installed."
    um = pytest.importorskip('ultralytics.utils.metrics')
    for seed in range(3):
        dets,gts = random_images(seed, n_img=200, n_cls=5)
        ref = um.ConfusionMatrix(names={i:str(i) for i in range(5)})
        f32 = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)
        for d,g in zip(dets, gts):
            ref.process_batch(dict(cls=f32(d['labels']-1), conf=f32(d['scores']), bboxes=f32(d['boxes'])),
                              dict(cls=f32(g['labels']-1), bboxes=f32(g['boxes']).reshape(-1,4)), conf=.25, iou_thres=.5)
        cm = confusion_matrix(dets, gts, 5)
        o = np.r_[1:6, 0]
        np.testing.assert_array_equal(cm[np.ix_(o, o)], ref.matrix)

def test_pr_curves_with_a_class_never_detected():
    "A class with objects but no detection is drawn at zero, and the plot does not fail."
    import matplotlib.pyplot as plt
    gts = [dict(boxes=np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), labels=np.array([1, 2]))]
    dets = [dict(boxes=np.array([[0, 0, 10, 10]]), labels=np.array([1]), scores=np.array([.9]))]
    ax = plot_pr_curves(dets, gts, ['#na#', 'cat', 'dog'])
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {'cat: 1.000', 'dog: 0.000'}
    plt.close('all')
