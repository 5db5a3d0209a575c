"""Export in one process, run in another: the same detections from `load_learner`, from a `torch.export` program in a
process that imports only torch and torchvision, and from ONNX Runtime; `decode_dets` exported on its own, empty
images included; the contract of the files (names, shapes, metadata), their warnings and their errors."""
import json, subprocess, sys, warnings
import numpy as np, onnx, onnxruntime as ort, pytest, torch
from PIL import Image
from fastai.torch_core import set_seed
from ssd_fastai.boxes import scaled2pixels, pixels2scaled
from ssd_fastai.shapes import make_shapes
from ssd_fastai.data import detection_dls
from ssd_fastai.inference import DetDecoder, decode_dets, decode_dets_loop
from ssd_fastai.learner import ssd_learner
from ssd_fastai.deploy import export_onnx, export_program, image_batch

SIZE = (64, 64)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A small detector trained from scratch on the shapes; images: three of the set, one of them also resized to a
    non-square size (the contract squishes it), and a blank one."""
    tmp = tmp_path_factory.mktemp('export')
    set_seed(0)
    path = make_shapes(tmp/'shapes', n=32, size=80)
    dls = detection_dls(path, size=SIZE[0], bs=8, num_workers=0)
    learn = ssd_learner(dls, arch='resnet10t', pretrained=False, path=tmp, strides=(16,32,64), metrics=[])
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(8, 1e-2)
    imgs = sorted((path/'images').iterdir())[:3]
    Image.open(imgs[0]).resize((100, 70)).save(tmp/'wide.png')
    Image.new('RGB', (90, 70), (128, 128, 128)).save(tmp/'blank.png')
    return learn, [*imgs, tmp/'wide.png', tmp/'blank.png'], tmp


def _best_scores(learn, items)->torch.Tensor:
    "The best class score of each image, through fastai's pipeline."
    xb, = learn.dls.test_dl(items, num_workers=0).one_batch()
    with torch.no_grad(): return learn.loss_func.activation(learn.model.eval()(xb))[0].flatten(1).max(1).values


@pytest.fixture(scope='module')
def thresholds(trained):
    """Two decoders: `many` (score 0.005) keeps dozens of detections per image; `one_empty` has its score threshold halfway between
    the lowest best score of an image (the blank one, usually) and the next, so that exactly that image has none."""
    learn,items,_ = trained
    best = _best_scores(learn, items).sort()
    assert best.values[1] - best.values[0] > 1e-3, f'two images score alike, far too close for a threshold between them: {best}'
    return dict(many=0.005, one_empty=float(best.values[:2].mean()), empty=int(best.indices[0]))


@pytest.fixture(scope='module')
def exported(trained, thresholds):
    "Both files for both decoders, the raw ONNX file, the predictions to compare with, and every warning raised while exporting."
    learn,items,tmp = trained
    files,preds = {},{}
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        for k in ('many', 'one_empty'):
            learn.loss_func.decoder = DetDecoder(score_thresh=thresholds[k])
            files[k] = export_program(learn, f'{k}.pt2'), export_onnx(learn, f'{k}.onnx')
            preds[k] = learn.predict_batch(items)
        files['raw'] = export_onnx(learn, 'raw.onnx', decode=False)
    return files, preds, ws


def _run(code:str)->dict:
    "Run `code` in a fresh Python process; it prints one JSON line."
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _orig_px(b, item):
    "Boxes in the pixels of the input (the training size) mapped to the pixels of the original image `item`."
    with Image.open(item) as im: return scaled2pixels(pixels2scaled(torch.as_tensor(b, dtype=torch.float32), SIZE[::-1]), im.size)


def _same_dets(got, want, eps_s=1e-4, eps_b=1e-4):
    """Each image's detections `(boxes, names, scores)` are the same in `got` and `want`: as many, and each of `want`
    matched one to one by one of `got` with its name, its score within `eps_s` and its box within `eps_b`.
    (Matched rather than compared slot by slot: two scores closer than the runtimes' rounding may swap places.)"""
    assert len(got) == len(want)
    for i,((gb,gl,gs),(wb,wl,ws)) in enumerate(zip(got, want)):
        assert len(gl) == len(wl), f'image {i}: {len(gl)} detections instead of {len(wl)}'
        free = list(range(len(gl)))
        for b,l,s in zip(wb, wl, ws):
            cand = [j for j in free if gl[j] == l and abs(float(gs[j]) - float(s)) <= eps_s]
            assert cand, f'image {i}: no {l} scoring {float(s):.6f}'
            j = min(cand, key=lambda j: float((torch.as_tensor(gb[j]) - b).abs().max()))
            assert float((torch.as_tensor(gb[j]) - b).abs().max()) <= eps_b, f'image {i}: {l} box {gb[j]} instead of {b}'
            free.remove(j)


def _named(b, l, s, vocab, items)->list:
    "Padded outputs `(B,K,...)` of an exported detector as `learn.predict_batch` gives them: original pixels, names, scores."
    b,l,s = (torch.as_tensor(np.asarray(t)) for t in (b, l, s))
    return [(_orig_px(bi[li>0], it), [vocab[j] for j in li[li>0]], si[li>0]) for it,bi,li,si in zip(items, b, l, s)]


def test_load_learner_in_fresh_process(trained, thresholds):
    learn,items,tmp = trained
    learn.loss_func.decoder = DetDecoder(score_thresh=thresholds['many'])
    learn.export('ssd.pkl')
    res = _run(f"""
import json, warnings; warnings.filterwarnings('ignore')
from fastai.learner import load_learner
learn = load_learner({str(tmp/'ssd.pkl')!r})
print(json.dumps([[b.tolist(), list(l), s.tolist()] for b,l,s in learn.predict_batch({[str(i) for i in items]!r})]))
""")
    for (b,l,s),(b2,l2,s2) in zip(learn.predict_batch(items), res):
        assert len(l) > 0 and list(l) == l2
        torch.testing.assert_close(b, torch.tensor(b2), atol=1e-4, rtol=0)
        torch.testing.assert_close(s, torch.tensor(s2), atol=1e-5, rtol=0)


_CONTRACT = """
import json, sys, numpy as np, torch, torchvision
from PIL import Image
def batch(paths, h, w):
    ims = [Image.open(p).convert('RGB').resize((w, h), Image.BILINEAR) for p in paths]
    return torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32)/255 for im in ims])).permute(0,3,1,2).contiguous()
"""

def test_program_in_fresh_process(trained, thresholds, exported):
    "The `.pt2` files loaded where only torch and torchvision are imported: `learn.predict`'s detections to 1e-4, in a batch and one image at a time."
    learn,items,_ = trained
    files,preds,_ = exported
    res = _run(_CONTRACT + f"""
out = {{}}
for k,f in {json.dumps({k: str(v[0]) for k,v in files.items() if k != 'raw'})}.items():
    extra = {{'ssd_fastai.json': ''}}
    det = torch.export.load(f, extra_files=extra).module()
    meta = json.loads(extra['ssd_fastai.json'])
    x = batch({[str(i) for i in items]!r}, *meta['input_size'])
    whole = [t.tolist() for t in det(x)]
    alone = [[t[0].tolist() for t in det(x[i:i+1])] for i in range(len(x))]
    out[k] = dict(meta=meta, whole=whole, alone=alone)
out['modules'] = sorted({{m.split('.')[0] for m in sys.modules}} & {{'fastai', 'fastcore', 'ssd_fastai', 'timm'}})
print(json.dumps(out))
""")
    assert res['modules'] == []
    for k in ('many', 'one_empty'):
        r = res[k]
        assert r['meta']['input_size'] == list(SIZE) and r['meta']['vocab'] == list(learn.dls.vocab)
        assert r['meta']['outputs'] == ['boxes', 'labels', 'scores'] and r['meta']['decoder']['max_det'] == 100
        vocab = r['meta']['vocab']
        _same_dets(_named(*r['whole'], vocab, items), preds[k])
        _same_dets(_named(*zip(*r['alone']), vocab, items), preds[k])
    assert min(len(l) for _,l,_ in preds['many']) > 20                           # many detections in every image
    assert [len(l) == 0 for _,l,_ in preds['one_empty']] == [i == thresholds['empty'] for i in range(len(items))]


def test_onnx_runtime(trained, exported):
    "The ONNX files: a valid model, the documented inputs, outputs and metadata, and `learn.predict`'s detections in a batch and alone."
    learn,items,_ = trained
    files,preds,_ = exported
    x = image_batch(items, SIZE).numpy()
    for k in ('many', 'one_empty'):
        f = files[k][1]
        onnx.checker.check_model(str(f), full_check=True)
        sess = ort.InferenceSession(str(f), providers=['CPUExecutionProvider'])
        assert [(i.name, i.type, i.shape) for i in sess.get_inputs()] == [('images', 'tensor(float)', ['batch', 3, *SIZE])]
        assert [(o.name, o.type, o.shape) for o in sess.get_outputs()] == [
            ('boxes', 'tensor(float)', ['batch', 100, 4]), ('labels', 'tensor(int64)', ['batch', 100]), ('scores', 'tensor(float)', ['batch', 100])]
        meta = {m: json.loads(v) for m,v in sess.get_modelmeta().custom_metadata_map.items()}
        assert meta['vocab'] == list(learn.dls.vocab) and meta['input_size'] == list(SIZE)
        assert onnx.load(str(f)).opset_import[0].version == 20
        _same_dets(_named(*sess.run(None, {'images': x}), meta['vocab'], items), preds[k])
        alone = [[o[0] for o in sess.run(None, {'images': x[i:i+1]})] for i in range(len(x))]
        _same_dets(_named(*zip(*alone), meta['vocab'], items), preds[k])


def test_onnx_raw_outputs(trained, exported):
    "`decode=False`: every anchor's class scores and box in input pixels, as the model's own activations give them."
    learn,items,_ = trained
    files,_,_ = exported
    sess = ort.InferenceSession(str(files['raw']), providers=['CPUExecutionProvider'])
    assert [o.name for o in sess.get_outputs()] == ['scores', 'boxes']
    rs,rb = (torch.from_numpy(o) for o in sess.run(None, {'images': image_batch(items, SIZE).numpy()}))
    xb, = learn.dls.test_dl(items, num_workers=0).one_batch()
    with torch.no_grad(): s,b = learn.loss_func.activation(learn.model.eval()(xb))
    A = learn.model.anchors.shape[0]
    assert rs.shape == (len(items), A, len(learn.dls.vocab)-1) and rb.shape == (len(items), A, 4)
    torch.testing.assert_close(rs, s, atol=1e-5, rtol=0)
    torch.testing.assert_close(rb, scaled2pixels(b, SIZE[::-1]), atol=1e-3, rtol=0)


def test_export_raises_no_deprecation_warning(exported):
    _,_,ws = exported
    assert not [str(w.message) for w in ws if issubclass(w.category, (DeprecationWarning, FutureWarning))]


class _Decode(torch.nn.Module):
    "`decode_dets` alone, as a module to export."
    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs
    def forward(self, scores, boxes): return decode_dets(scores, boxes, **self.kwargs)


def _random_dets(B, A=60, C=3, seed=0):
    "Scores and boxes of a batch in which image 1 has no candidate above 0.5 and image 2 exactly one."
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(B, A, C, generator=g)
    b = torch.rand(B, A, 4, generator=g)*1.4 - 1; b[...,2:] = b[...,:2] + torch.rand(B, A, 2, generator=g)*0.6
    if B > 2:
        s[1] *= 0.5
        s[2] *= 0.5; s[2,7,1] = 0.9
    return s, b


@pytest.fixture(scope='module')
def decode_files(tmp_path_factory):
    "`decode_dets` (score 0.5, 20 detections) exported as a `torch.export` program and as an ONNX file."
    tmp = tmp_path_factory.mktemp('decode')
    s,b = _random_dets(3)
    batch = torch.export.Dim('batch', min=1)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)   # torchvision's `nms` shape function
        ep = torch.export.export(_Decode(score_thresh=0.5, max_det=20), (s, b), dynamic_shapes=({0: batch}, {0: batch}))
        torch.onnx.export(ep, input_names=['scores', 'boxes'], external_data=False, verbose=False).save(str(tmp/'decode.onnx'), external_data=False)
    return ep.module(), ort.InferenceSession(str(tmp/'decode.onnx'), providers=['CPUExecutionProvider'])


@pytest.mark.parametrize('B,all_empty', [(5, False), (1, False), (3, True)])
def test_exported_decode_dets(decode_files, B, all_empty):
    """Exported `decode_dets` gives eager `decode_dets`'s detections, and those are the per-image loop's: a batch with an
    image without candidates and one with a single candidate, a single image, and a batch in which every image is empty."""
    prog,sess = decode_files
    s,b = _random_dets(B, seed=B)
    if all_empty: s = s*0.4                                     # nothing above 0.5
    eb,el,es = decode_dets(s, b, score_thresh=0.5, max_det=20)
    assert el.shape == (B, 20)
    for got in (prog(s, b), [torch.from_numpy(o) for o in sess.run(None, {'scores': s.numpy(), 'boxes': b.numpy()})]):
        torch.testing.assert_close(got[1], el, atol=0, rtol=0)
        torch.testing.assert_close(got[2], es, atol=1e-6, rtol=0)
        torch.testing.assert_close(got[0], eb, atol=1e-6, rtol=0)
    ref = decode_dets_loop(s, b, score_thresh=0.5, max_det=20)
    assert [int((l > 0).sum()) for l in el] == [len(r) for r in ref]
    if B > 2 and not all_empty: assert len(ref[1]) == 0 and len(ref[2]) == 1
    if all_empty: assert all(len(r) == 0 for r in ref) and not el.any() and not es.any() and not eb.any()
    for i,r in enumerate(ref):
        if not r: continue
        torch.testing.assert_close(es[i,:len(r)], torch.stack([d[0] for d in r]))
        assert el[i,:len(r)].tolist() == [d[1] for d in r]
        torch.testing.assert_close(eb[i,:len(r)], torch.stack([d[2] for d in r]))


def test_importing_does_not_import_onnx():
    res = _run("import json, sys, ssd_fastai.all, ssd_fastai.deploy; print(json.dumps(sorted(m for m in ('onnx', 'onnxscript', 'onnxruntime') if m in sys.modules)))")
    assert res == []


def test_export_onnx_without_onnx(trained, monkeypatch):
    learn,_,_ = trained
    monkeypatch.setitem(sys.modules, 'onnx', None)   # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'ssd_fastai\[onnx\]'"): export_onnx(learn, 'never.onnx')
    assert not (learn.path/'never.onnx').exists()


def test_export_errors(trained, monkeypatch):
    "A `Detector` needs its input size; a failed save leaves neither the file nor a temporary one."
    learn,_,tmp = trained
    with pytest.raises(ValueError, match='size'): export_program(learn.to_detector(), tmp/'det.pt2')
    def fail(*args, **kwargs): raise OSError('disk full')
    monkeypatch.setattr(torch.export, 'save', fail)
    with pytest.raises(OSError, match='disk full'): export_program(learn, 'broken.pt2')
    assert not [p.name for p in tmp.iterdir() if 'broken' in p.name]
