"The `DataLoaders` of each stage of the lesson (`ssd_fastai.data`), on the synthetic set."
import pytest, torch
from ssd_fastai.records import DetRecord, read_detections
from ssd_fastai.shapes import make_shapes, SHAPES
from ssd_fastai.data import *
from conftest import write_image

# ---------------------------------------------------------------- the lesson's stages and the synthetic set

def test_make_shapes_stages(tmp_path):
    p = make_shapes(tmp_path/'s', n=24, size=64)
    recs = read_detections(p)
    assert len(recs)==24 and {l for r in recs for l in r.labels} <= set(SHAPES)
    ld = largest_object_dls(p, size=48, bs=4)
    x, bb, lbl = ld.one_batch()
    assert bb.shape==(4, 1, 4) and lbl.shape==(4, 1) and ld.vocab[0]=='#na#'
    md = multi_label_dls(p, size=48, bs=4)
    assert md.one_batch()[1].shape==(4, len(md.vocab))
    # regenerated only when the parameters change
    t = (p/'annotations.json').stat().st_mtime_ns
    make_shapes(tmp_path/'s', n=24, size=64)
    assert (p/'annotations.json').stat().st_mtime_ns==t
    make_shapes(tmp_path/'s', n=24, size=64, seed=1)
    assert (p/'annotations.json').stat().st_mtime_ns!=t

def test_empty_images_train(tmp_path):
    "A batch of images without objects goes through an SSD model and its loss, and gives gradients."
    model, loss = pytest.importorskip('ssd_fastai.model'), pytest.importorskip('ssd_fastai.loss')
    recs = [DetRecord(write_image(tmp_path/f'{i}.png', (48, 48)), [[4, 4, 30, 30]]*(i==0), ['a']*(i==0)) for i in range(4)]
    x, bb, lbl = detection_dls(recs, size=64, bs=4, valid_pct=0, shuffle=False).one_batch()
    assert (lbl[0]>0).any() and (lbl[1:]==0).all()
    m = model.ssd_model('resnet18', n_cls=1, pretrained=False)
    for b_, l_ in [(bb, lbl), (bb[1:], lbl[1:])]:   # with one object, and with none at all
        m.zero_grad()
        l = loss.SSDLoss()(m(x[:len(l_)]), b_, l_)
        l.backward()
        assert torch.isfinite(l) and all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
