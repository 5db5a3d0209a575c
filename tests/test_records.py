"Bad input for the readers (`ssd_fastai.records`): each case repaired with a counted warning or refused with a clear error; and the datasets' own splits."
import json, warnings
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from ssd_fastai.records import *
from ssd_fastai.data import detection_dls, train_valid_records
from conftest import write_image, write_voc, write_coco, write_yolo, warns

# ---------------------------------------------------------------- missing, corrupt, odd images

def test_missing_imagewrite_voc(tmp_path):
    root = write_voc(tmp_path, {'a': [('cat', (1, 1, 10, 10))], 'b': [('cat', (1, 1, 10, 10))]})
    (root/'JPEGImages'/'b.png').unlink()
    recs, w = warns(read_voc, root)
    assert len(recs)==1 and recs[0].fname.name=='a.png'
    assert 'skipped 1 records whose image is missing' in w and 'b.png' in w

def test_annotation_points_to_missing_filewrite_coco(tmp_path):
    js = write_coco(tmp_path, [('x.png', (32, 32), True), ('gone.png', (32, 32), False)], [(0, 1, [1, 1, 5, 5], 0), (1, 2, [1, 1, 5, 5], 0)])
    recs, w = warns(read_coco, js)
    assert [r.fname.name for r in recs]==['x.png']
    assert 'missing' in w and 'gone.png' in w

def test_missing_everything_is_an_error(tmp_path):
    js = write_coco(tmp_path, [('gone.png', (32, 32), False)], [(0, 1, [1, 1, 5, 5], 0)])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(ValueError, match='no usable image'): read_coco(js)

def test_corrupt_image(tmp_path):
    root = write_voc(tmp_path, {'a': [('cat', (1, 1, 10, 10))], 'b': [('cat', (1, 1, 10, 10))]})
    (root/'JPEGImages'/'b.png').write_bytes(b'this is not an image')
    recs, w = warns(read_voc, root)
    assert len(recs)==1 and 'cannot be read' in w and 'b.png' in w
    with pytest.raises(ValueError, match='b.png: cannot read image'): read_image_size(root/'JPEGImages'/'b.png')

def test_truncated_image_caught_with_decode(tmp_path):
    root = write_voc(tmp_path, {'a': [('cat', (1, 1, 10, 10))], 'b': [('cat', (1, 1, 10, 10))]})
    p = root/'JPEGImages'/'b.png'
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:len(p.read_bytes())//2])
    recs, w = warns(read_voc, root, decode=True)
    assert len(recs)==1 and 'b.png' in w

@pytest.mark.parametrize('mode', ['L', 'RGBA', 'P', 'I;16', 'LA'])
def test_greyscale_rgba_palette_become_rgb(tmp_path, mode):
    recs = [DetRecord(write_image(tmp_path/f'{i}.png', (40, 30), mode=mode), [[2, 2, 20, 20]], ['a']) for i in range(2)]
    x, bb, lbl = detection_dls(recs, size=32, bs=2, valid_pct=0, batch_tfms=[]).one_batch()
    assert x.shape==(2, 3, 32, 32) and x.dtype==torch.float32

def test_malformed_xml(tmp_path):
    root = write_voc(tmp_path, {'a': [('cat', (1, 1, 10, 10))]})
    (root/'Annotations'/'a.xml').write_text('<annotation><object>')
    with pytest.raises(ValueError, match=r'a\.xml: not valid XML'): read_voc(root)

def test_xml_object_without_box(tmp_path):
    root = write_voc(tmp_path, {'a': []})
    (root/'Annotations'/'a.xml').write_text('<annotation><filename>a.png</filename><object><name>cat</name></object></annotation>')
    with pytest.raises(ValueError, match=r'a\.xml: an <object> without'): read_voc(root)

def test_malformed_json(tmp_path):
    (tmp_path/'a.json').write_text('{"images": [')
    with pytest.raises(ValueError, match='not valid JSON'): read_coco(tmp_path/'a.json')

def test_coco_unknown_category_and_image(tmp_path):
    js = write_coco(tmp_path, [('x.png', (32, 32), True)], [(0, 7, [1, 1, 5, 5], 0)])
    with pytest.raises(ValueError, match='unknown category id 7'): read_coco(js)

# ---------------------------------------------------------------- bad boxes

def test_swapped_corners(tmp_path):
    recs = [DetRecord(write_image(tmp_path/'a.png'), [[30, 20, 10, 5], [1, 1, 9, 9]], ['a', 'b'])]
    (r,), w = warns(check_records, recs, 'test')
    np.testing.assert_array_equal(r.bboxes, [[10, 5, 30, 20], [1, 1, 9, 9]])
    assert r.labels==['a', 'b'] and 'swapped the corners of 1 boxes' in w

def test_nan_boxes_dropped_with_their_label(tmp_path):
    recs = [DetRecord(write_image(tmp_path/'a.png'), [[np.nan, 1, 5, 5], [1, 1, 9, 9], [0, 0, np.inf, 3]], ['a', 'b', 'a'])]
    (r,), w = warns(check_records, recs, 'test')
    assert r.labels==['b'] and 'dropped 2 boxes with NaN or infinite coordinates' in w

def test_boxes_outside_image(tmp_path):
    recs = [DetRecord(write_image(tmp_path/'a.png', (64, 48)), [[-10, -5, 20, 20], [50, 40, 90, 70], [70, 50, 80, 60]], ['a', 'b', 'a'])]
    (r,), w = warns(check_records, recs, 'test')
    np.testing.assert_array_equal(r.bboxes, [[0, 0, 20, 20], [50, 40, 64, 48]])
    assert r.labels==['a', 'b']
    assert 'clipped 2 boxes outside their image' in w and 'dropped 1 boxes outside their image' in w

def test_subpixel_overshoot_is_silent(tmp_path):
    recs = [DetRecord(write_image(tmp_path/'a.png', (64, 48)), [[-0.2, 0, 64.3, 48]], ['a'])]
    (r,), w = warns(check_records, recs, 'test')
    assert w=='' and r.bboxes.max()==64

def test_zero_area_boxeswrite_voc(tmp_path):
    # the BCCD case: xmin==xmax and ymin==ymax, a single point
    root = write_voc(tmp_path, {'a': [('RBC', (504, 337, 504, 337)), ('RBC', (1, 1, 10, 10)), ('WBC', (5, 5, 5, 20))]}, size=(640, 480))
    (r,), w = warns(read_voc, root)
    assert r.labels==['RBC'] and 'dropped 2 zero-area boxes' in w and str(root) in w
    np.testing.assert_array_equal(r.bboxes, [[0, 0, 10, 10]])   # 1-based inclusive -> 0-based continuous

def test_voc_split_and_difficult(tmp_path):
    root = write_voc(tmp_path, {'a': [('cat', (1, 1, 10, 10))], 'b': [('dog', (1, 1, 10, 10))]})
    x = (root/'Annotations'/'b.xml').read_text().replace('<difficult>0</difficult>', '<difficult>1</difficult>')
    (root/'Annotations'/'b.xml').write_text(x)
    (root/'ImageSets'/'Main').mkdir(parents=True)
    (root/'ImageSets'/'Main'/'val.txt').write_text('b\n')
    (r,) = read_voc(root, split='val')
    assert r.labels==['dog'] and r.difficult.tolist()==[True]
    with pytest.raises(FileNotFoundError, match='no split list'): read_voc(root, split='test')

def test_coco_crowd(tmp_path):
    js = write_coco(tmp_path, [('x.png', (32, 32), True)], [(0, 1, [1, 1, 5, 5], 0), (0, 2, [2, 2, 20, 20], 1)])
    (r,), w = warns(read_coco, js)
    assert r.labels==['a'] and 'dropped 1 crowd boxes' in w
    (r,), w = warns(read_coco, js, keep_crowd=True)
    assert r.labels==['a', 'b'] and r.difficult.tolist()==[False, True]
    np.testing.assert_array_equal(r.bboxes[1], [2, 2, 22, 22])   # [x,y,w,h] -> xyxy

# ---------------------------------------------------------------- classes

@pytest.mark.parametrize('how', ['list', 'dict', 'txt'])
def test_yolo_names_and_coords(tmp_path, how):
    root = write_yolo(tmp_path, ['1 0.5 0.5 0.2 0.4', '0 0.1 0.1 0.2 0.2'], how=how)
    (r,) = read_yolo(root, split='train')
    assert r.labels==['b', 'a'] and r.size==(100, 50)
    np.testing.assert_allclose(r.bboxes, [[40, 15, 60, 35], [0, 0, 20, 10]], atol=1e-4)

def test_yolo_unknown_class_id(tmp_path):
    root = write_yolo(tmp_path, ['5 0.5 0.5 0.2 0.4'])
    with pytest.raises(ValueError, match=r'0\.txt, line 1: unknown class id 5'): read_yolo(root)

def test_yolo_bad_line(tmp_path):
    root = write_yolo(tmp_path, ['1 0.5 zero 0.2 0.4'])
    with pytest.raises(ValueError, match=r"0\.txt, line 1: expected 'class cx cy w h'"): read_yolo(root)

def test_yolo_image_without_labels_has_no_objects(tmp_path):
    root = write_yolo(tmp_path, ['1 0.5 0.5 0.2 0.4'])
    write_image(root/'images'/'train'/'1.png', (30, 30))
    recs = read_yolo(root)
    assert [len(r) for r in recs]==[1, 0]

def test_unknown_class_in_vocab(tmp_path):
    recs = [DetRecord(write_image(tmp_path/'a.png'), [[1, 1, 9, 9]], ['zebra'])]
    with pytest.raises(ValueError, match="a.png: unknown class 'zebra'"): detection_dls(recs, vocab=['cat', 'dog'])
    with pytest.raises(ValueError, match="unknown class 'zebra'"): check_records(recs, vocab=['cat'])

def test_csv(tmp_path):
    write_image(tmp_path/'images'/'a.png', (64, 48)); write_image(tmp_path/'images'/'b.png', (64, 48))
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
    voc = write_voc(tmp_path/'voc', {'a': [('cat', (1, 1, 10, 10))]})
    js = write_coco(tmp_path/'coco', [('x.png', (32, 32), True)], [(0, 1, [1, 1, 5, 5], 0)])
    yolo = write_yolo(tmp_path/'yolo', ['1 0.5 0.5 0.2 0.4'])
    for p, lbl in [(voc, 'cat'), (js, 'a'), (js.parent, 'a'), (yolo, 'b'), (yolo/'data.yaml', 'b')]:
        assert read_detections(p)[0].labels==[lbl], p
    with pytest.raises(FileNotFoundError): read_detections(tmp_path/'nope')
    (tmp_path/'empty').mkdir()
    with pytest.raises(ValueError, match='found no VOC XML'): read_detections(tmp_path/'empty')

# ---------------------------------------------------------------- the datasets' own splits

def test_voc_splits(tmp_path):
    root = write_voc(tmp_path, {'a': [('cat', (1, 1, 10, 10))], 'b': [('dog', (1, 1, 10, 10))], 'c': [('cat', (2, 2, 9, 9))]},
                     splits={'train': ['a', 'c'], 'val': ['b'], 'aeroplane_train': ['a']})
    assert dataset_splits(root) == ['train', 'val']                      # per-class lists are not splits
    assert [r.fname.name for r in read_detections(root, 'train')] == ['a.png', 'c.png']
    assert [r.fname.name for r in read_detections(root, 'valid')] == ['b.png']   # an alias of 'val'
    (root/'ImageSets'/'Main'/'val.txt').write_text('b\nzz\n')
    with pytest.raises(FileNotFoundError, match=r"1 annotations listed in .*val\.txt are missing: .*zz\.xml"): read_voc(root, 'val')

def test_coco_split_files(tmp_path):
    for sp, fns in [('train', ['a.png', 'b.png']), ('val', ['c.png'])]:
        write_coco(tmp_path, [(f, (32, 32), True) for f in fns], [(0, 1, [1, 1, 5, 5], 0)], fname=f'annotations/instances_{sp}2017.json')
    assert dataset_splits(tmp_path) == ['train', 'val']
    assert [r.fname.name for r in read_detections(tmp_path, 'val')] == ['c.png']
    assert len(read_coco(tmp_path/'annotations'/'instances_train2017.json', split='train')) == 2
    with pytest.raises(ValueError, match="pass `split=` one of train, val"): read_detections(tmp_path)
    with pytest.raises(FileNotFoundError, match="no 'test' split"): read_detections(tmp_path, 'test')
    with pytest.raises(ValueError, match="holds the 'val' split, not 'train'"): read_coco(tmp_path/'annotations'/'instances_val2017.json', split='train')

def test_yolo_data_yaml_splits(tmp_path):
    for sp in ('train', 'val'): write_yolo(tmp_path, ['0 0.5 0.5 0.2 0.2'], sub=sp)
    write_image(tmp_path/'images'/'val'/'1.png', (100, 50))
    (tmp_path/'lists').mkdir()
    (tmp_path/'lists'/'val.txt').write_text('../images/val/0.png\n../images/val/1.png\n')
    (tmp_path/'data.yaml').write_text('path: .\ntrain: images/train\nval: lists/val.txt\ntest: images/test\nnames: [a, b]\n')
    assert dataset_splits(tmp_path) == ['test', 'train', 'val']
    assert [len(r) for r in read_detections(tmp_path, 'val')] == [1, 0]   # 1.png has no label file
    with pytest.raises(FileNotFoundError, match=r"data\.yaml: 'test: images/test' points to .*images/test, which does not exist"):
        read_yolo(tmp_path, 'test')
    (tmp_path/'lists'/'val.txt').write_text('../images/val/0.png\n../images/val/gone.png\n')
    with pytest.raises(FileNotFoundError, match=r"val\.txt lists 1 images that do not exist: .*gone\.png"): read_yolo(tmp_path, 'val')

def test_yolo_image_folders_as_splits(tmp_path):
    for sp in ('train2017', 'val2017'): write_yolo(tmp_path, ['1 0.5 0.5 0.2 0.2'], sub=sp)
    (tmp_path/'data.yaml').write_text('names: [a, b]\n')
    assert dataset_splits(tmp_path) == ['train', 'val']
    assert read_yolo(tmp_path, 'val')[0].fname.parent.name == 'val2017'

def test_yolo_split_without_labels_warns(tmp_path):
    write_yolo(tmp_path, ['1 0.5 0.5 0.2 0.2'], sub='train')
    write_image(tmp_path/'images'/'val'/'5.png')
    recs, w = warns(read_yolo, tmp_path, 'val')
    assert [len(r) for r in recs] == [0] and "none of the 1 images of split 'val' has a label file" in w

def test_csv_split_files(tmp_path):
    for f in ('a', 'b', 'c'): write_image(tmp_path/'images'/f'{f}.png')
    (tmp_path/'data').mkdir()
    for sp, f in [('train', 'a'), ('test', 'b')]:
        (tmp_path/'data'/f'{sp}_labels.csv').write_text(f'filename,class,xmin,ymin,xmax,ymax\n{f}.png,cat,1,1,10,10\n')
    (tmp_path/'data'/'all_labels.csv').write_text('filename,class,xmin,ymin,xmax,ymax\na.png,cat,1,1,10,10\nb.png,cat,1,1,10,10\n')
    assert dataset_splits(tmp_path/'data') == ['test', 'train']
    assert [r.fname.name for r in read_detections(tmp_path/'data', 'test')] == ['b.png']

def test_train_valid_records(tmp_path):
    "The dataset's train/val splits by default; a random split where there is none, said so; a class only in val, named."
    root = write_voc(tmp_path/'v', {'a': [('cat', (1, 1, 10, 10))], 'b': [('cow', (1, 1, 10, 10))], 'c': [('cat', (2, 2, 9, 9))]},
                     splits={'train': ['a', 'c'], 'val': ['b'], 'test': ['b']})
    (trn, val, how), w = warns(train_valid_records, root)
    assert [r.fname.name for r in trn] == ['a.png', 'c.png'] and [r.fname.name for r in val] == ['b.png']
    assert "'train' (2 images) for training, 'val' (1) for validation" in how and "cow" in w
    trn, val, how = train_valid_records(root, valid_split='test')
    assert [r.fname.name for r in val] == ['b.png'] and "'test' (1)" in how
    with pytest.raises(ValueError, match="has no split 'trainval'"): train_valid_records(root, train_split='trainval')
    flat = write_voc(tmp_path/'f', {s: [('cat', (1, 1, 10, 10))] for s in 'abcdefghij'})
    trn, val, how = train_valid_records(flat, valid_pct=0.2, seed=0)
    assert (len(trn), len(val)) == (8, 2) and 'no validation split' in how and 'random 20%' in how
    dls = warns(detection_dls, root, size=32, bs=2)[0]
    assert (len(dls.train_ds), len(dls.valid_ds)) == (2, 1) and dls.vocab == ['#na#', 'cat', 'cow'] and 'validation' in dls.split_desc
