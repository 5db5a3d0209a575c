"Bad input for the readers and DataLoaders of `ssd_fastai.data`: each case repaired with a counted warning or refused with a clear error."
import json, warnings
from pathlib import Path
import numpy as np, pytest, torch
import matplotlib
matplotlib.use('Agg')
from PIL import Image
from fastai.vision.augment import Resize, Rotate, Zoom, Flip, FlipItem, DihedralItem, RandomResizedCrop
from fastai.torch_core import TensorImage, TensorMultiCategory
from fastai.vision.core import TensorBBox
from ssd_fastai.data import *

# ---------------------------------------------------------------- helpers: tiny datasets written in tmp dirs

def _img(path, size=(64, 48), mode='RGB', color=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode=='P': im = Image.new('RGB', size, (200, 30, 30)).convert('P')
    else: im = Image.new(mode, size, color if color is not None else {'L': 128, 'I;16': 300, 'LA': (128, 255), 'RGBA': (90, 120, 150, 200)}.get(mode, (128, 128, 128)))
    im.save(path)
    return path

def _voc(root, objs_per_img, size=(64, 48), write_imgs=True):
    "A VOC folder; `objs_per_img`: {stem: [(name, (xmin,ymin,xmax,ymax)), ...]} with raw (1-based) coordinates."
    (root/'Annotations').mkdir(parents=True, exist_ok=True)
    for stem, objs in objs_per_img.items():
        if write_imgs: _img(root/'JPEGImages'/f'{stem}.png', size)
        ob = ''.join(f"<object><name>{n}</name><truncated>0</truncated><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin>"
                     f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b in objs)
        (root/'Annotations'/f'{stem}.xml').write_text(
            f"<annotation><filename>{stem}.png</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
            f"<depth>3</depth></size>{ob}</annotation>")
    return root

def _coco(root, imgs, anns, cats=({'id': 1, 'name': 'a'}, {'id': 2, 'name': 'b'})):
    "A COCO folder: `imgs` [(file_name, (w,h), write?)], `anns` [(img_idx, cat_id, [x,y,w,h], iscrowd)]."
    (root/'images').mkdir(parents=True, exist_ok=True)
    images = []
    for i, (fn, sz, write) in enumerate(imgs):
        if write: _img(root/'images'/fn, sz)
        images.append(dict(id=i+1, file_name=fn, width=sz[0], height=sz[1]))
    annotations = [dict(id=j+1, image_id=i+1, category_id=c, bbox=b, iscrowd=cr, area=0) for j, (i, c, b, cr) in enumerate(anns)]
    (root/'annotations.json').write_text(json.dumps(dict(images=images, annotations=annotations, categories=list(cats))))
    return root/'annotations.json'

def _warns(f, *args, **kwargs):
    "Call `f`, returning its result and the text of all the warnings it raised."
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        res = f(*args, **kwargs)
    return res, ' | '.join(str(o.message) for o in w)

# ---------------------------------------------------------------- missing, corrupt, odd images

def test_missing_image_voc(tmp_path):
    root = _voc(tmp_path, {'a': [('cat', (1, 1, 10, 10))], 'b': [('cat', (1, 1, 10, 10))]})
    (root/'JPEGImages'/'b.png').unlink()
    recs, w = _warns(read_voc, root)
    assert len(recs)==1 and recs[0].fname.name=='a.png'
    assert 'skipped 1 records whose image is missing' in w and 'b.png' in w

def test_annotation_points_to_missing_file_coco(tmp_path):
    js = _coco(tmp_path, [('x.png', (32, 32), True), ('gone.png', (32, 32), False)], [(0, 1, [1, 1, 5, 5], 0), (1, 2, [1, 1, 5, 5], 0)])
    recs, w = _warns(read_coco, js)
    assert [r.fname.name for r in recs]==['x.png']
    assert 'missing' in w and 'gone.png' in w

def test_missing_everything_is_an_error(tmp_path):
    js = _coco(tmp_path, [('gone.png', (32, 32), False)], [(0, 1, [1, 1, 5, 5], 0)])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(ValueError, match='no usable image'): read_coco(js)

def test_corrupt_image(tmp_path):
    root = _voc(tmp_path, {'a': [('cat', (1, 1, 10, 10))], 'b': [('cat', (1, 1, 10, 10))]})
    (root/'JPEGImages'/'b.png').write_bytes(b'this is not an image')
    recs, w = _warns(read_voc, root)
    assert len(recs)==1 and 'cannot be read' in w and 'b.png' in w
    with pytest.raises(ValueError, match='b.png: cannot read image'): image_size(root/'JPEGImages'/'b.png')

def test_truncated_image_caught_with_decode(tmp_path):
    root = _voc(tmp_path, {'a': [('cat', (1, 1, 10, 10))], 'b': [('cat', (1, 1, 10, 10))]})
    p = root/'JPEGImages'/'b.png'
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:len(p.read_bytes())//2])
    recs, w = _warns(read_voc, root, decode=True)
    assert len(recs)==1 and 'b.png' in w

@pytest.mark.parametrize('mode', ['L', 'RGBA', 'P', 'I;16', 'LA'])
def test_greyscale_rgba_palette_become_rgb(tmp_path, mode):
    recs = [DetRecord(_img(tmp_path/f'{i}.png', (40, 30), mode=mode), [[2, 2, 20, 20]], ['a']) for i in range(2)]
    x, bb, lbl = detection_dls(recs, size=32, bs=2, valid_pct=0, batch_tfms=[]).one_batch()
    assert x.shape==(2, 3, 32, 32) and x.dtype==torch.float32

def test_malformed_xml(tmp_path):
    root = _voc(tmp_path, {'a': [('cat', (1, 1, 10, 10))]})
    (root/'Annotations'/'a.xml').write_text('<annotation><object>')
    with pytest.raises(ValueError, match=r'a\.xml: not valid XML'): read_voc(root)

def test_xml_object_without_box(tmp_path):
    root = _voc(tmp_path, {'a': []})
    (root/'Annotations'/'a.xml').write_text('<annotation><filename>a.png</filename><object><name>cat</name></object></annotation>')
    with pytest.raises(ValueError, match=r'a\.xml: an <object> without'): read_voc(root)

def test_malformed_json(tmp_path):
    (tmp_path/'a.json').write_text('{"images": [')
    with pytest.raises(ValueError, match='not valid JSON'): read_coco(tmp_path/'a.json')

def test_coco_unknown_category_and_image(tmp_path):
    js = _coco(tmp_path, [('x.png', (32, 32), True)], [(0, 7, [1, 1, 5, 5], 0)])
    with pytest.raises(ValueError, match='unknown category id 7'): read_coco(js)

# ---------------------------------------------------------------- bad boxes

def test_swapped_corners(tmp_path):
    recs = [DetRecord(_img(tmp_path/'a.png'), [[30, 20, 10, 5], [1, 1, 9, 9]], ['a', 'b'])]
    (r,), w = _warns(check_records, recs, 'test')
    np.testing.assert_array_equal(r.bboxes, [[10, 5, 30, 20], [1, 1, 9, 9]])
    assert r.labels==['a', 'b'] and 'swapped the corners of 1 boxes' in w

def test_nan_boxes_dropped_with_their_label(tmp_path):
    recs = [DetRecord(_img(tmp_path/'a.png'), [[np.nan, 1, 5, 5], [1, 1, 9, 9], [0, 0, np.inf, 3]], ['a', 'b', 'a'])]
    (r,), w = _warns(check_records, recs, 'test')
    assert r.labels==['b'] and 'dropped 2 boxes with NaN or infinite coordinates' in w

def test_boxes_outside_image(tmp_path):
    recs = [DetRecord(_img(tmp_path/'a.png', (64, 48)), [[-10, -5, 20, 20], [50, 40, 90, 70], [70, 50, 80, 60]], ['a', 'b', 'a'])]
    (r,), w = _warns(check_records, recs, 'test')
    np.testing.assert_array_equal(r.bboxes, [[0, 0, 20, 20], [50, 40, 64, 48]])
    assert r.labels==['a', 'b']
    assert 'clipped 2 boxes outside their image' in w and 'dropped 1 boxes outside their image' in w

def test_subpixel_overshoot_is_silent(tmp_path):
    recs = [DetRecord(_img(tmp_path/'a.png', (64, 48)), [[-0.2, 0, 64.3, 48]], ['a'])]
    (r,), w = _warns(check_records, recs, 'test')
    assert w=='' and r.bboxes.max()==64

def test_zero_area_boxes_voc(tmp_path):
    # the BCCD case: xmin==xmax and ymin==ymax, a single point
    root = _voc(tmp_path, {'a': [('RBC', (504, 337, 504, 337)), ('RBC', (1, 1, 10, 10)), ('WBC', (5, 5, 5, 20))]}, size=(640, 480))
    (r,), w = _warns(read_voc, root)
    assert r.labels==['RBC'] and 'dropped 2 zero-area boxes' in w and str(root) in w
    np.testing.assert_array_equal(r.bboxes, [[0, 0, 10, 10]])   # 1-based inclusive -> 0-based continuous

def test_voc_split_and_difficult(tmp_path):
    root = _voc(tmp_path, {'a': [('cat', (1, 1, 10, 10))], 'b': [('dog', (1, 1, 10, 10))]})
    x = (root/'Annotations'/'b.xml').read_text().replace('<difficult>0</difficult>', '<difficult>1</difficult>')
    (root/'Annotations'/'b.xml').write_text(x)
    (root/'ImageSets'/'Main').mkdir(parents=True)
    (root/'ImageSets'/'Main'/'val.txt').write_text('b\n')
    (r,) = read_voc(root, split='val')
    assert r.labels==['dog'] and r.difficult.tolist()==[True]
    with pytest.raises(FileNotFoundError, match='no split list'): read_voc(root, split='test')

def test_coco_crowd(tmp_path):
    js = _coco(tmp_path, [('x.png', (32, 32), True)], [(0, 1, [1, 1, 5, 5], 0), (0, 2, [2, 2, 20, 20], 1)])
    (r,), w = _warns(read_coco, js)
    assert r.labels==['a'] and 'dropped 1 crowd boxes' in w
    (r,), w = _warns(read_coco, js, keep_crowd=True)
    assert r.labels==['a', 'b'] and r.difficult.tolist()==[False, True]
    np.testing.assert_array_equal(r.bboxes[1], [2, 2, 22, 22])   # [x,y,w,h] -> xyxy

# ---------------------------------------------------------------- classes

def _yolo(root, lines, names=('a', 'b'), yaml_names='list'):
    _img(root/'images'/'train'/'0.png', (100, 50))
    (root/'labels'/'train').mkdir(parents=True, exist_ok=True)
    (root/'labels'/'train'/'0.txt').write_text('\n'.join(lines))
    if yaml_names=='list': (root/'data.yaml').write_text('names: [' + ', '.join(names) + ']\n')
    elif yaml_names=='dict': (root/'data.yaml').write_text('names:\n' + ''.join(f'  {i}: {n}\n' for i, n in enumerate(names)))
    else: (root/'classes.txt').write_text('\n'.join(names))
    return root

@pytest.mark.parametrize('how', ['list', 'dict', 'txt'])
def test_yolo_names_and_coords(tmp_path, how):
    root = _yolo(tmp_path, ['1 0.5 0.5 0.2 0.4', '0 0.1 0.1 0.2 0.2'], yaml_names=how)
    (r,) = read_yolo(root, split='train')
    assert r.labels==['b', 'a'] and r.size==(100, 50)
    np.testing.assert_allclose(r.bboxes, [[40, 15, 60, 35], [0, 0, 20, 10]], atol=1e-4)

def test_yolo_unknown_class_id(tmp_path):
    root = _yolo(tmp_path, ['5 0.5 0.5 0.2 0.4'])
    with pytest.raises(ValueError, match=r'0\.txt, line 1: unknown class id 5'): read_yolo(root)

def test_yolo_bad_line(tmp_path):
    root = _yolo(tmp_path, ['1 0.5 zero 0.2 0.4'])
    with pytest.raises(ValueError, match=r"0\.txt, line 1: expected 'class cx cy w h'"): read_yolo(root)

def test_yolo_image_without_labels_has_no_objects(tmp_path):
    root = _yolo(tmp_path, ['1 0.5 0.5 0.2 0.4'])
    _img(root/'images'/'train'/'1.png', (30, 30))
    recs = read_yolo(root)
    assert [len(r) for r in recs]==[1, 0]

def test_unknown_class_in_vocab(tmp_path):
    recs = [DetRecord(_img(tmp_path/'a.png'), [[1, 1, 9, 9]], ['zebra'])]
    with pytest.raises(ValueError, match="a.png: unknown class 'zebra'"): detection_dls(recs, vocab=['cat', 'dog'])
    with pytest.raises(ValueError, match="unknown class 'zebra'"): check_records(recs, vocab=['cat'])

def test_csv(tmp_path):
    _img(tmp_path/'images'/'a.png', (64, 48)); _img(tmp_path/'images'/'b.png', (64, 48))
    (tmp_path/'data').mkdir()
    (tmp_path/'data'/'boxes.csv').write_text('filename,width,height,class,xmin,ymin,xmax,ymax\n'
                                             'a.png,64,48,cat,1,1,10,10\na.png,64,48,dog,5,5,20,30\nb.png,64,48,,,,,\n')
    recs = read_detections(tmp_path/'data'/'boxes.csv')
    assert [r.labels for r in recs]==[['cat', 'dog'], []]
    (r, _) = read_csv(tmp_path/'data'/'boxes.csv', one_based=True)
    np.testing.assert_array_equal(r.bboxes[0], [0, 0, 10, 10])
    (tmp_path/'bad.csv').write_text('file,xmin\na.png,1\n')
    with pytest.raises(ValueError, match='needs the columns'): read_csv(tmp_path/'bad.csv')

def test_read_detections_dispatch(tmp_path):
    voc = _voc(tmp_path/'voc', {'a': [('cat', (1, 1, 10, 10))]})
    js = _coco(tmp_path/'coco', [('x.png', (32, 32), True)], [(0, 1, [1, 1, 5, 5], 0)])
    yolo = _yolo(tmp_path/'yolo', ['1 0.5 0.5 0.2 0.4'])
    for p, lbl in [(voc, 'cat'), (js, 'a'), (js.parent, 'a'), (yolo, 'b'), (yolo/'data.yaml', 'b')]:
        assert read_detections(p)[0].labels==[lbl], p
    with pytest.raises(FileNotFoundError): read_detections(tmp_path/'nope')
    (tmp_path/'empty').mkdir()
    with pytest.raises(ValueError, match='found no VOC XML'): read_detections(tmp_path/'empty')

# ---------------------------------------------------------------- batching: empty images, many objects, padding

def test_empty_images_batch(tmp_path):
    recs = [DetRecord(_img(tmp_path/f'{i}.png', (40, 40)), [[2, 2, 20, 20]]*(i%2), ['a']*(i%2)) for i in range(4)]
    dls = detection_dls(recs, size=32, bs=4, valid_pct=0)
    x, bb, lbl = dls.one_batch()
    assert lbl.dtype==torch.long and bb.shape==(4, 1, 4)
    assert (lbl.sum(1)>0).sum()==2
    dls.show_batch(max_n=4)
    assert len(dls.decode_batch((x, bb, lbl)))==4

def test_all_empty_batch(tmp_path):
    recs = [DetRecord(_img(tmp_path/f'{i}.png', (40, 40))) for i in range(3)]
    x, bb, lbl = detection_dls(recs, size=32, bs=3, valid_pct=0, vocab=['a']).one_batch()
    assert bb.shape==(3, 1, 4) and (lbl==0).all() and (bb==0).all()
    x, y = multi_label_dls(recs, size=32, bs=3, valid_pct=0, vocab=['a']).one_batch()
    assert y.shape==(3, 1) and (y==0).all()

def test_more_objects_than_anchors(tmp_path):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 90, (500, 2))
    recs = [DetRecord(_img(tmp_path/'a.png', (100, 100)), np.concatenate([xy, xy+rng.uniform(2, 10, (500, 2))], 1), ['a']*500),
            DetRecord(_img(tmp_path/'b.png', (100, 100)), [[1, 1, 50, 50]], ['a'])]
    x, bb, lbl = detection_dls(recs, size=32, bs=2, valid_pct=0, batch_tfms=[], shuffle=False).one_batch()
    assert bb.shape[1]>=400 and (lbl[1, 1:]==0).all() and (lbl[0]>0).sum()>=400
    dls, w = _warns(detection_dls, recs, size=32, bs=2, valid_pct=0, batch_tfms=[], max_objs=10)
    x, bb, lbl = dls.one_batch()
    assert bb.shape==(2, 10, 4) and 'kept the largest 10 objects of 1 images' in w

def test_padding_is_inert_after_batch_augmentation(tmp_path):
    recs = [DetRecord(_img(tmp_path/f'{i}.png', (64, 64)), [[5, 5, 30, 30], [40, 40, 60, 60]][:1+i%2], ['a', 'b'][:1+i%2]) for i in range(8)]
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

def _painted(tmp_path, n=6, seed=1):
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        w, h = int(rng.integers(60, 120)), int(rng.integers(60, 120))
        x0, y0 = int(rng.integers(0, w//2)), int(rng.integers(0, h//2))
        x1, y1 = int(rng.integers(x0+10, w)), int(rng.integers(y0+10, h))
        a = np.zeros((h, w, 3), np.uint8); a[y0:y1, x0:x1] = 255
        Image.fromarray(a).save(tmp_path/f'{i}.png')
        recs.append(DetRecord(tmp_path/f'{i}.png', [[x0, y0, x1, y1]], ['box']))
    return recs

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
    dl = detection_dls(_painted(tmp_path), bs=6, valid_pct=0, item_tfms=item_tfms, batch_tfms=bt).train
    x, bb, lbl = (t.as_subclass(torch.Tensor) for t in dl.one_batch())
    px = 2/x.shape[-1]
    for xi, bi, li in zip(x, bb, lbl):
        p = painted_box(xi)
        if li[0]==0: continue
        assert encloses(bi[0], p, tol=1.5*px)
        if tight: assert (bi[0]-p).abs().max() <= 1.5*px

def test_records_not_mutated_by_augmentation(tmp_path):
    recs = _painted(tmp_path, n=4)
    before = [r.bboxes.copy() for r in recs]
    dl = detection_dls(recs, bs=4, valid_pct=0, item_tfms=[DihedralItem(p=1.), FlipItem(p=1.), Resize(32)]).train
    for _ in range(2): dl.one_batch()
    for r, b in zip(recs, before): np.testing.assert_array_equal(r.bboxes, b)

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
    recs = [DetRecord(_img(tmp_path/f'{i}.png', (48, 48)), [[4, 4, 30, 30]]*(i==0), ['a']*(i==0)) for i in range(4)]
    x, bb, lbl = detection_dls(recs, size=64, bs=4, valid_pct=0, shuffle=False).one_batch()
    assert (lbl[0]>0).any() and (lbl[1:]==0).all()
    m = model.ssd_model('resnet18', n_cls=1, pretrained=False)
    for b_, l_ in [(bb, lbl), (bb[1:], lbl[1:])]:   # with one object, and with none at all
        m.zero_grad()
        l = loss.SSDLoss()(m(x[:len(l_)]), b_, l_)
        l.backward()
        assert torch.isfinite(l) and all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
