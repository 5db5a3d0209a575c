"Boxes through augmentation (`ssd_fastai.transforms`): padding that survives empty images and batch transforms, boxes that follow every geometric transform to the pixel, and fastai's own classes left as they were."
import json
from pathlib import Path
import numpy as np, pytest, torch
from fastai.vision.augment import (Resize, Rotate, Zoom, Flip, FlipItem, DihedralItem, Dihedral, RandomResizedCrop, CropPad, Warp)
from fastai.torch_core import TensorImage, TensorMultiCategory
from fastai.vision.core import TensorBBox
from ssd_fastai.records import DetRecord
from ssd_fastai.transforms import *
from ssd_fastai.data import detection_dls, multi_label_dls
from conftest import write_image, warns, box_images, painted_box, encloses, run_python

# ---------------------------------------------------------------- batching: empty images, many objects, padding

def test_empty_images_batch(tmp_path):
    recs = [DetRecord(write_image(tmp_path/f'{i}.png', (40, 40)), [[2, 2, 20, 20]]*(i%2), ['a']*(i%2)) for i in range(4)]
    dls = detection_dls(recs, size=32, bs=4, valid_pct=0)
    x, bb, lbl = dls.one_batch()
    assert lbl.dtype==torch.long and bb.shape==(4, 1, 4)
    assert (lbl.sum(1)>0).sum()==2
    dls.show_batch(max_n=4)
    assert len(dls.decode_batch((x, bb, lbl)))==4

def test_all_empty_batch(tmp_path):
    recs = [DetRecord(write_image(tmp_path/f'{i}.png', (40, 40))) for i in range(3)]
    x, bb, lbl = detection_dls(recs, size=32, bs=3, valid_pct=0, vocab=['a']).one_batch()
    assert bb.shape==(3, 1, 4) and (lbl==0).all() and (bb==0).all()
    x, y = multi_label_dls(recs, size=32, bs=3, valid_pct=0, vocab=['a']).one_batch()
    assert y.shape==(3, 1) and (y==0).all()

def test_more_objects_than_anchors(tmp_path):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 90, (500, 2))
    recs = [DetRecord(write_image(tmp_path/'a.png', (100, 100)), np.concatenate([xy, xy+rng.uniform(2, 10, (500, 2))], 1), ['a']*500),
            DetRecord(write_image(tmp_path/'b.png', (100, 100)), [[1, 1, 50, 50]], ['a'])]
    x, bb, lbl = detection_dls(recs, size=32, bs=2, valid_pct=0, batch_tfms=[], shuffle=False).one_batch()
    assert bb.shape[1]>=400 and (lbl[1, 1:]==0).all() and (lbl[0]>0).sum()>=400
    dls, w = warns(detection_dls, recs, size=32, bs=2, valid_pct=0, batch_tfms=[], max_objs=10)
    x, bb, lbl = dls.one_batch()
    assert bb.shape==(2, 10, 4) and 'kept the largest 10 objects of 1 images' in w

def test_padding_is_inert_after_batch_augmentation(tmp_path):
    recs = [DetRecord(write_image(tmp_path/f'{i}.png', (64, 64)), [[5, 5, 30, 30], [40, 40, 60, 60]][:1+i%2], ['a', 'b'][:1+i%2]) for i in range(8)]
    dl = detection_dls(recs, size=32, bs=8, valid_pct=0, batch_tfms=[Rotate(max_deg=30, p=1.), Zoom(max_zoom=2., p=1.)]).train
    for _ in range(3):
        x, bb, lbl = dl.one_batch()
        bb, lbl = bb.as_subclass(torch.Tensor), lbl.as_subclass(torch.Tensor)
        assert (bb[lbl==0]==0).all() and bb.abs().max()<=1
        assert ((bb[...,2:]-bb[...,:2]).prod(-1)[lbl>0]>0).all()

def test_vanished_boxes_become_padding():
    x = TensorImage(torch.zeros(2, 3, 8, 8))
    bb = TensorBBox(torch.tensor([[[1.2, 1.1, 1.5, 1.3], [-0.5, -0.5, 1.5, 0.5]], [[-0.2, -0.2, 0.2, 0.2], [0.3, 0.3, 0.4, 0.4]]]))
    lbl = TensorMultiCategory(torch.tensor([[1, 2], [0, 3]]))
    _, bb2, lbl2 = ClipBoxes()((x, bb, lbl))
    assert lbl2.tolist()==[[0, 2], [0, 3]]
    assert bb2[0, 0].abs().sum()==0 and bb2[1, 0].abs().sum()==0
    assert torch.allclose(bb2[0, 1], torch.tensor([-0.5, -0.5, 1., 0.5]))

# ---------------------------------------------------------------- boxes follow every geometric transform

@pytest.mark.parametrize('item_tfms,batch_tfms,tight', [
    ([FlipItem(p=1.), Resize(48, method='squish')], [], True),
    ([DihedralItem(p=1.), Resize(48, method='crop')], [], True),
    ([RandomResizedCrop(48, min_scale=0.4)], [Flip(p=1.)], True),
    ([Resize(48, method='pad', pad_mode='zeros')], [Zoom(max_zoom=1.5, p=1., pad_mode='zeros')], True),
    ([Resize(48, method='squish')], 'default', False),
    ([Resize(48, method='squish')], [Rotate(max_deg=45, p=1., pad_mode='zeros')], False),
])
def test_boxes_follow_transforms(tmp_path, item_tfms, batch_tfms, tight):
    bt = det_aug_transforms(max_rotate=15, p_affine=1.) if batch_tfms=='default' else batch_tfms
    dl = detection_dls(box_images(tmp_path), bs=6, valid_pct=0, item_tfms=item_tfms, batch_tfms=bt).train
    x, bb, lbl = (t.as_subclass(torch.Tensor) for t in dl.one_batch())
    px = 2/x.shape[-1]
    for xi, bi, li in zip(x, bb, lbl):
        p = painted_box(xi)
        if li[0]==0: continue
        assert encloses(bi[0], p, tol=1.5*px)
        if tight: assert (bi[0]-p).abs().max() <= 1.5*px

def test_records_not_mutated_by_augmentation(tmp_path):
    recs = box_images(tmp_path, n=4)
    before = [r.bboxes.copy() for r in recs]
    dl = detection_dls(recs, bs=4, valid_pct=0, item_tfms=[DihedralItem(p=1.), FlipItem(p=1.), Resize(32)]).train
    for _ in range(2): dl.one_batch()
    for r, b in zip(recs, before): np.testing.assert_array_equal(r.bboxes, b)

NO_ROTATION = {'squish': ([Resize(64, method='squish')], []),
               'pad': ([Resize(64, method='pad', pad_mode='zeros')], []),
               'crop': ([Resize(64, method='crop')], []),
               'flip_item': ([FlipItem(p=1.), Resize(64, method='squish')], []),
               'dihedral_item': ([DihedralItem(p=1.), Resize(64, method='squish')], []),
               'rrc': ([RandomResizedCrop(64, min_scale=0.5)], []),
               'crop_pad': ([CropPad(80), Resize(64, method='squish')], []),
               'flip_batch': ([Resize(64, method='squish')], [Flip(p=1.)]),
               'dihedral_batch': ([Resize(64, method='squish')], [Dihedral(p=1.)]),
               'zoom': ([Resize(64, method='squish')], [Zoom(max_zoom=1.5, p=1.)])}

@pytest.mark.parametrize('name', list(NO_ROTATION))
def test_boxes_fit_painted_rectangles(tmp_path, name):
    "Without rotation, every transform keeps each box within 1.5 px of its painted rectangle (vanished boxes leave at most a sliver)."
    item_tfms, batch_tfms = NO_ROTATION[name]
    torch.manual_seed(0)
    dl = detection_dls(box_images(tmp_path, n=8, seed=0, sizes=(72, 120)), bs=8, valid_pct=0, item_tfms=item_tfms,
                       batch_tfms=batch_tfms, shuffle=False).train
    x, bb, lbl = (t.as_subclass(torch.Tensor) for t in dl.one_batch())
    for xi, bi, li in zip(x, bb, lbl):
        p = painted_box(xi)
        if li[0]==0: assert p.sum()==0 or (p[2:]-p[:2]).prod()<0.01; continue
        assert (bi[0]-p).abs().max()*x.shape[-1]/2 <= 1.5, name

@pytest.mark.parametrize('name', ['rotate', 'warp', 'aug_transforms'])
def test_boxes_enclose_painted_rectangles(tmp_path, name):
    "Rotation and warp map a box to a quadrilateral: the box around it encloses the painted rectangle."
    bt = {'rotate': [Rotate(max_deg=30, p=1., pad_mode='zeros')], 'warp': [Warp(magnitude=0.3, p=1., pad_mode='zeros')],
          'aug_transforms': det_aug_transforms(max_rotate=20, max_warp=0.2, p_affine=1.)}[name]
    torch.manual_seed(0)
    dl = detection_dls(box_images(tmp_path, n=8, seed=0, sizes=(72, 120)), bs=8, valid_pct=0, item_tfms=[Resize(64, method='squish')],
                       batch_tfms=bt, shuffle=False).train
    x, bb, lbl = (t.as_subclass(torch.Tensor) for t in dl.one_batch())
    assert all(encloses(bi[0], painted_box(xi), 2/64*1.5) for xi, bi, li in zip(x, bb, lbl) if li[0]>0)

# ---------------------------------------------------------------- fastai's own classes are left as they were

_FASTAI_STATE = """
import json, warnings, torch
warnings.simplefilter('ignore')
import fastai.vision.all as fv
from fastai.vision.core import TensorBBox, TensorPoint
from fastai.vision.augment import FlipItem, DihedralItem, Resize, Flip
%s
def _attrs(c): return {k: f'{getattr(v, "__module__", "")}.{getattr(v, "__qualname__", type(v).__name__)}' for k,v in vars(c).items()}
b = torch.tensor([[-0.5, -0.2, 0.1, 0.3]])
src = b.clone()
out = dict(flip=TensorBBox(b, img_size=(10, 20)).flip_lr().tolist(),
           flip_size=getattr(TensorBBox(b, img_size=(10, 20)).flip_lr(), 'img_size', None),
           dihedral=TensorBBox(src, img_size=(10, 20)).dihedral(1).tolist(), dihedral_input=src.tolist(),
           crop_size=list(TensorBBox(torch.tensor([[-.5, -.5, .5, .5]]), img_size=(100, 80)).crop_pad((50, 40)).img_size),
           flip_item=FlipItem(p=1.)(TensorBBox(b.clone()), split_idx=0).tolist(),
           attrs={c.__name__: _attrs(c) for c in (TensorBBox, TensorPoint, fv.TensorBase, fv.TensorImage, fv.PILImage)},
           types=sorted(f'{t.__module__}.{t.__qualname__}' for t in fv.TensorBBox.__subclasses__() if not t.__module__.startswith('ssd_fastai')))
print(json.dumps(out))
"""

def test_fastai_unchanged_by_import_and_load(tiny_learner, tmp_path):
    """In a fresh process, fastai's `TensorBBox` and its neighbours behave exactly as without the library after
    `from ssd_fastai.all import *` and `load_learner` of an exported detector: same results of the box methods
    (bugs included), same attributes on the classes."""
    tiny_learner.export(tmp_path/'ssd.pkl')
    plain = run_python(_FASTAI_STATE % '')
    after = run_python(_FASTAI_STATE % f"from ssd_fastai.all import *\nfrom fastai.learner import load_learner\nload_learner({str(tmp_path/'ssd.pkl')!r})")
    assert plain == after
    assert after['flip'][0][0] > after['flip'][0][2] and after['flip_size'] is None   # fastai's own flip_lr, as it is
    assert after['dihedral_input'] != [[-0.5, -0.2, 0.1, 0.3]] and after['crop_size'] == [100, 80]

def test_library_boxes_are_det_bboxes(tmp_path):
    "The library's pipeline carries `DetBBox` from the items through the batch transforms (fastai's affine ones return `TensorBBox`)."
    recs = [DetRecord(write_image(tmp_path/f'{i}.png', (64, 64)), [[5, 5, 30, 30]], ['a']) for i in range(4)]
    dl = detection_dls(recs, size=32, bs=4, valid_pct=0, batch_tfms=[Rotate(max_deg=10, p=1.), Flip(p=1.)]).train
    x, bb, lbl = dl.one_batch()
    assert type(bb) is DetBBox and bb.img_size is not None
    assert type(dl.after_item(dl.create_item(0))[1]) is DetBBox
