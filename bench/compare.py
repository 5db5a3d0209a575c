"""Peer benchmark: `ssd_learner` against torchvision's RetinaNet, SSD and SSDlite on the same timm body.

Every model is trained on the same `DataLoaders` (same augmentation, size, batch size, epochs) as a fastai `Learner`
with the same schedule: `fit_one_cycle(epochs, lr)` from scratch, or with `--pretrained` fastai's `fine_tune`
(`--freeze-epochs` with the body frozen, then `--epochs` of the whole network with discriminative learning rates) from
timm's ImageNet weights. The torchvision models are wrapped in a module that returns the sum of their own losses, with
a callback handing it the batch's targets (pixel xyxy, labels 1..C, padding rows dropped). All are evaluated by
pycocotools on the validation set in the pixels of the original images (ground truth and results through the
library's `to_coco`), and timed on the same machine: the whole fit, then, after training, all models interleaved
round-robin (fair on a busy machine; medians): a training step through fastai (`Learner.one_batch`, data loading
excluded), inference latency per image at bs 1 and bs 32 (normalise + model + decoding + NMS, as deployed:
`to_detector()` for ours, the torchvision model in eval mode for the others), and the memory each phase adds (peak
RSS above its start on CPU, `max_memory_allocated` on GPU). Then the library's own parts: fastai's overhead (the
`ssd_learner` step against a plain PyTorch loop over the same model, loss and batches, interleaved), the loss,
`decode_dets` against a per-image torchvision `batched_nms` post-processing, and its mAP against pycocotools and
faster-coco-eval on the same detections (time and value).

With `--pretrained` (made for `--data voc`, Pascal VOC2007 photos with their official train/val lists) it also trains
ours from scratch, scored after every epoch next to the pretrained run, and each torchvision model again for the
training time ours took (equal wall-clock time); `--variant` adds runs of ours with one setting changed.

    python bench/compare.py --quick                              # smoke test, ~3 min on 2 CPU cores
    python bench/compare.py                                      # CPU: shapes,bccd,coco128, ~19 min on 2 cores
    python bench/compare.py --gpu                                # one GPU: 20 epochs, 320 px, ~12 min on an H100
    python bench/compare.py --data voc --pretrained              # Pascal VOC, ImageNet-pretrained body, ~30 min on 2 cores

The real sets are read from `ssd_fastai.records.local_datasets()` (`$SSD_FASTAI_DATA`) or `--data-root`, and skipped
when missing; the pretrained weights come from timm's cache (`$HF_HUB_CACHE`).
"""
import argparse, ast, contextlib, io, logging, os, statistics, sys, tempfile, threading, time, warnings
from collections import OrderedDict
from functools import partial
from pathlib import Path
import numpy as np, torch, torch.nn as nn, timm
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
from fastai.vision.all import Learner, Callback, CancelValidException, Adam, IndexSplitter, params
from torchvision.ops import FeaturePyramidNetwork, batched_nms
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD, SSDHead
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from ssd_fastai.records import read_voc, read_yolo, read_image_size, local_datasets
from ssd_fastai.shapes import make_shapes
from ssd_fastai.transforms import det_aug_transforms
from ssd_fastai.data import detection_dls, train_valid_records
from ssd_fastai.model import timm_features
from ssd_fastai.loss import SSDLoss
from ssd_fastai.learner import ssd_learner
from ssd_fastai.inference import decode_dets
from ssd_fastai.metrics import mean_ap, to_coco
from ssd_fastai.boxes import scaled2pixels
from ssd_fastai.callbacks import rng_state, set_rng_state
from _timing import run_times

warnings.filterwarnings('ignore')
logging.getLogger('timm').setLevel(logging.ERROR)   # timm lists the classifier weights a features_only body leaves out

# ---------------------------------------------------------------- measuring
class PeakMem:
    "Peak resident memory (sampled from /proc every 5 ms) or, on GPU, `torch.cuda.max_memory_allocated`, in MiB; `extra`: above the start."
    def __init__(self, dev): self.dev,self.peak,self.start = dev,0.,0.
    def _rss(self):
        with open('/proc/self/statm') as f: return int(f.read().split()[1])*os.sysconf('SC_PAGE_SIZE')/2**20
    def _poll(self):
        while not self._stop.is_set(): self.peak = max(self.peak, self._rss()); time.sleep(0.005)
    def __enter__(self):
        if self.dev == 'cuda': torch.cuda.reset_peak_memory_stats(); self.start = torch.cuda.memory_allocated()/2**20
        else:
            self.start = self.peak = self._rss()
            self._stop = threading.Event(); self._t = threading.Thread(target=self._poll, daemon=True); self._t.start()
        return self
    def __exit__(self, *a):
        if self.dev == 'cuda': self.peak = torch.cuda.max_memory_allocated()/2**20
        else: self._stop.set(); self._t.join()
    @property
    def extra(self): return self.peak-self.start

def sync(dev):
    if dev == 'cuda': torch.cuda.synchronize()

def interleaved(fs:dict, dev, reps, warmup=1):
    "Median wall time of each function of `fs`, run round-robin `reps` times after `warmup` rounds: fair on a busy machine."
    return {k:statistics.median(w) for k,(w,_) in run_times(fs, reps, warmup, lambda: sync(dev)).items()}

def median_time(f, dev, reps=5, warmup=1):
    "Median wall time of `f()` in seconds."
    return interleaved({'f': f}, dev, reps, warmup)['f']

class NoValid(Callback):
    "Skip the validation pass during `fit`: every model is evaluated afterwards by the same COCO evaluator."
    def before_validate(self): raise CancelValidException()

# ---------------------------------------------------------------- evaluation
COCO_CLASSES = ('car', 'person', 'cat', 'train', 'bus')   # per-class AP50 reported for these, where the data has them

class Scorer:
    "pycocotools (or faster-coco-eval) on the validation records, in the pixels of the original images, through `to_coco`."
    def __init__(self, recs:list, # the validation `DetRecord`s, in the order of the validation `DataLoader`
                 vocab:list, # the `DataLoaders`' vocab (index 0 the background)
                ):
        idx = {c:i for i,c in enumerate(vocab)}
        # VOC's difficult objects as crowd regions: pycocotools' only way to ignore an object (no TP, no FP)
        self.gts = [dict(boxes=r.bboxes, labels=[idx[l] for l in r.labels], iscrowd=r.difficult) for r in recs]
        sizes = [r.size if r.size else read_image_size(r.fname) for r in recs]
        self.vocab,self.gt = list(vocab),to_coco(self.gts, vocab, images=[dict(width=w, height=h) for w,h in sizes])

    def __call__(self, dets:list, # per image: 'boxes' pixel xyxy, 'labels' vocab indices, 'scores'
                 lib='pycocotools')->dict: # 'ap', 'ap50', 'aps' (small objects) and 'cls' {class: AP50}
        "COCO's AP@[.5:.95], AP50, AP of small objects, and the AP50 of the `COCO_CLASSES` present, of `dets`."
        if lib == 'pycocotools': from pycocotools.coco import COCO; from pycocotools.cocoeval import COCOeval
        else: from faster_coco_eval import COCO, COCOeval_faster as COCOeval
        res = to_coco(dets, self.vocab)
        if not res: return dict(ap=0., ap50=0., aps=0., cls={c:0. for c in COCO_CLASSES if c in self.vocab})
        with contextlib.redirect_stdout(io.StringIO()):
            g = COCO(); g.dataset = self.gt; g.createIndex()
            e = COCOeval(g, g.loadRes(res), 'bbox'); e.evaluate(); e.accumulate(); e.summarize()
        cls = {}
        if lib == 'pycocotools':
            prec = e.eval['precision'][0,:,:,0,-1]              # IoU 0.5, all recalls, classes, all areas, 100 dets
            for c in COCO_CLASSES:
                if c not in self.vocab: continue
                p = prec[:, e.params.catIds.index(self.vocab.index(c))]
                cls[c] = float(p[p > -1].mean()) if (p > -1).any() else float('nan')
        return dict(ap=float(e.stats[0]), ap50=float(e.stats[1]), aps=float(e.stats[3]), cls=cls)

# ---------------------------------------------------------------- torchvision models on a timm body
class TVBody(nn.Module):
    "A timm `features_only` body (the library's `timm_features`) as a torchvision backbone: an `OrderedDict` of feature maps."
    def __init__(self, arch, out_indices, pretrained=False):
        super().__init__()
        self.body = timm_features(arch, pretrained, out_indices=out_indices)
        self.channels = self.body.feature_info.channels()
    def forward(self, x): return OrderedDict((str(i), f) for i,f in enumerate(self.body(x)))

class FPNBackbone(nn.Module):
    "timm body (strides 8,16,32) + torchvision FPN with P6, P7: RetinaNet's P3-P7."
    def __init__(self, arch, pretrained=False, nf=256):
        super().__init__()
        self.body = TVBody(arch, (2,3,4), pretrained)
        self.fpn = FeaturePyramidNetwork(self.body.channels, nf, extra_blocks=LastLevelP6P7(nf, nf))
        self.out_channels = nf
    def forward(self, x): return self.fpn(self.body(x))

def _extra(ni, nf):
    return nn.Sequential(nn.Conv2d(ni, nf, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(nf), nn.ReLU(inplace=True))

class SSDBackbone(nn.Module):
    "timm body's stride-16 and 32 maps + two stride-2 convs: the levels (16,32,64,128) `ssd_learner` predicts on by default."
    def __init__(self, arch, pretrained=False, nf=256):
        super().__init__()
        self.body = TVBody(arch, (3,4), pretrained)
        self.extra = nn.ModuleList([_extra(self.body.channels[-1], nf), _extra(nf, nf)])
        self.out_channels = [*self.body.channels, nf, nf]
    def forward(self, x):
        xs = list(self.body(x).values())
        for e in self.extra: xs.append(e(xs[-1]))
        return OrderedDict((str(i), f) for i,f in enumerate(xs))

def tv_model(kind, arch, n_cls, size, pretrained=False):
    "torchvision RetinaNet / SSD / SSDlite on `arch`, images normalised with timm's stats, no resizing, 100 dets."
    cfg = timm.create_model(arch, pretrained=False, num_classes=0).pretrained_cfg
    kw = dict(image_mean=list(cfg['mean']), image_std=list(cfg['std']))
    if kind == 'retinanet':
        sizes = tuple((s, int(s*2**(1/3)), int(s*2**(2/3))) for s in (32,64,128,256,512))
        sizes = tuple(tuple(max(4, round(v*size/640)) for v in t) for t in sizes)   # COCO's anchors scaled to the input
        anc = AnchorGenerator(sizes, ((0.5,1.,2.),)*5)
        return RetinaNet(FPNBackbone(arch, pretrained), n_cls+1, min_size=size, max_size=size, anchor_generator=anc,
                         detections_per_img=100, **kw)
    bb = SSDBackbone(arch, pretrained)
    anc = DefaultBoxGenerator([[2]]*4)
    na = anc.num_anchors_per_location()
    head = (SSDHead(bb.out_channels, na, n_cls+1) if kind == 'ssd' else
            SSDLiteHead(bb.out_channels, na, n_cls+1, partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)))
    return SSD(bb, anc, (size,size), n_cls+1, head=head, detections_per_img=100, score_thresh=0.05, **kw)

def tv_targets(bb, lbl, size):
    "Padded `(B,M,4)` scaled boxes and `(B,M)` labels -> torchvision targets: pixel xyxy, labels 1..C, no padding."
    res = []
    for b,l in zip(bb.as_subclass(torch.Tensor), lbl.as_subclass(torch.Tensor)):
        b = (b[l>0].float()+1)/2*size
        l = l[l>0]
        ok = (b[:,2]-b[:,0] > 0.5) & (b[:,3]-b[:,1] > 0.5)                    # torchvision rejects degenerate boxes
        res.append(dict(boxes=b[ok], labels=l[ok]))
    return res

class TVWrap(nn.Module):
    "A torchvision detector as a fastai model: training forward returns its summed losses, eval forward detections."
    def __init__(self, m, size): super().__init__(); self.m,self.size,self.targets = m,size,None
    def forward(self, x):
        x = x.as_subclass(torch.Tensor)
        if self.training: return sum(self.m(list(x), self.targets).values())
        return self.m(list(x))

class TVTargets(Callback):
    "Give the wrapped torchvision model the targets of the batch before its forward."
    def before_batch(self): self.model.targets = tv_targets(*self.yb, self.model.size)

def tv_loss(out, *yb): return out

def tv_split(m:TVWrap)->list:
    "Parameter groups of a wrapped torchvision model: the timm body, then everything else (as `body_head_split` for ours)."
    body = params(m.m.backbone.body)
    ids = {id(p) for p in body}
    return [body, [p for p in m.parameters() if id(p) not in ids]]

# ---------------------------------------------------------------- data
DATASETS = dict(bccd='bccd', coco128='coco128', voc='voc2007_trainval')   # --data name: folder in the data root

def load_data(name, a):
    "Records (or a path, or VOC's official (train, val) records) of a dataset, or None when its folder is missing."
    if name == 'shapes':
        return make_shapes(Path(tempfile.gettempdir())/'ssd_fastai_compare_shapes', n=a.n_shapes, size=max(256, a.size))
    root = Path(a.data_root) if a.data_root else local_datasets()
    if root is None or not (root/DATASETS[name]).exists():
        print(f'-- {name}: no {DATASETS[name]} in {root or "the data root (set SSD_FASTAI_DATA or --data-root)"}, skipped'); return None
    root = root/DATASETS[name]
    if name == 'voc':
        trn,val,_ = train_valid_records(root)                 # the official train / val lists
        return (trn[:a.max_images], val[:a.max_images]) if a.max_images else (trn, val)
    recs = read_voc(root) if name == 'bccd' else read_yolo(root)
    return recs[:a.max_images] if a.max_images else recs

def make_dls(src, a, dev, size=None, aug=None):
    "The same `DataLoaders` for every model; the vocab is every class of the records (a small split may miss some in training)."
    kw = dict(size=size or a.size, bs=a.bs, num_workers=a.workers, device=dev, seed=42)
    if aug is not None: kw['batch_tfms'] = det_aug_transforms(**aug)
    if isinstance(src, tuple):                                 # (train, valid) records: that split
        trn,val = src
        recs = trn+val
        kw['splitter'] = IndexSplitter(range(len(trn), len(recs)))
    else: recs = src
    vocab = sorted({l for r in recs for l in r.labels}) if isinstance(recs, list) else None
    dls = detection_dls(recs, vocab=vocab, **kw)
    if isinstance(src, tuple) and (len(dls.train_ds), len(dls.valid_ds)) != (len(trn), len(val)):
        raise ValueError(f'the records were checked again and some dropped: the split of {len(trn)} / {len(val)} no longer holds')
    return dls

# ---------------------------------------------------------------- the models, as learners
class EpochLog(Callback):
    "Training time of each epoch (scoring excluded) and, with a `scorer`, the COCO scores of the model after it."
    order = 100
    def __init__(self, scorer=None, ours=True): self.scorer,self.ours,self.times,self.scores = scorer,ours,[],[]
    def before_epoch(self): self.t0 = time.perf_counter()
    def after_train(self): self.times.append(time.perf_counter()-self.t0)
    def after_epoch(self):
        if self.scorer is None: return
        st = rng_state(self.dls)                              # scoring leaves the run's random numbers as they were
        self.scores.append(self.scorer(predict_valid(self.learn, self.ours)))
        set_rng_state(st, self.dls)

def ours_learner(src, a, dev, pretrained=False, size=None, aug=None, loss=None, **kwargs):
    "`ssd_learner` with its defaults, but for `kwargs` (model settings) and `loss` (`SSDLoss` settings)."
    dls = make_dls(src, a, dev, size, aug)
    return ssd_learner(dls, arch=a.arch, pretrained=pretrained, metrics=[], cbs=[NoValid()],
                       loss_func=SSDLoss(**loss) if loss else None, **kwargs)

def tv_learner(kind, src, a, dev, pretrained=False, size=None, aug=None):
    dls = make_dls(src, a, dev, size, aug)
    m = TVWrap(tv_model(kind, a.arch, len(dls.vocab)-1, size or a.size, pretrained), size or a.size)
    learn = Learner(dls, m, loss_func=tv_loss, opt_func=Adam, splitter=tv_split, cbs=[TVTargets(), NoValid()])
    if pretrained: learn.freeze()
    return learn

@torch.inference_mode()
def predict_valid(learn, ours):
    "Per-image detections on the validation set, pixel xyxy of the original images, labels 1..C."
    model = learn.model.eval()
    recs,dets = learn.dls.valid.items,[]
    for xb,*_ in learn.dls.valid:
        if ours:
            lf = learn.loss_func
            bs,ls,ss = (t.as_subclass(torch.Tensor).cpu() for t in lf.decodes(lf.activation(model(xb))))
            for b,l,s in zip(bs,ls,ss): dets.append(dict(boxes=b[l>0], labels=l[l>0], scores=s[l>0], scaled=True))
        else:
            for o in model(xb): dets.append(dict(boxes=o['boxes'].cpu(), labels=o['labels'].cpu(), scores=o['scores'].cpu(), scaled=False))
        size = xb.shape[-1]                                    # the input side, S
    for d,r in zip(dets, recs):
        w,h = r.size if r.size else read_image_size(r.fname)
        b = d.pop('boxes').float()
        d['boxes'] = (scaled2pixels(b, (w,h)) if d.pop('scaled') else b*torch.tensor([w/size, h/size, w/size, h/size])).numpy()
        d['labels'],d['scores'] = d['labels'].numpy(),d['scores'].numpy()
    return dets

def batches(learn, n=2):
    "`n` training batches of the learner's own `DataLoaders` (augmented, on its device)."
    return [b for _,b in zip(range(n), learn.dls.train)]

def fastai_step(learn, bs):
    "One training step through fastai's machinery (`Learner.one_batch` with all its callbacks), cycling over `bs`."
    it = iter(range(10**9))
    def _f():
        learn.training = True; learn.model.train()
        learn.one_batch(0, bs[next(it) % len(bs)])
    return _f

def plain_step(learn, bs):
    "The same training step as a plain PyTorch loop: forward, loss, backward, Adam step."
    model,lf,it = learn.model,learn.loss_func,iter(range(10**9))
    bs = [tuple(t.as_subclass(torch.Tensor) for t in b) for b in bs]
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    def _f():
        x,bb,lbl = bs[next(it) % len(bs)]
        model.train(); opt.zero_grad(); lf(model(x), bb, lbl).backward(); opt.step()
    return _f

def predictor(learn, ours, a, dev, bs):
    "Normalise + model + decode + NMS on a (bs,3,S,S) batch in [0,1], as a user deploys it."
    x = torch.rand(bs, 3, a.size, a.size, device=dev)
    if ours:
        det = learn.to_detector().to(dev)
        f = lambda: det(x)
    else:
        m = learn.model.m
        f = lambda: m(list(x))
    def _f():
        learn.model.eval()
        with torch.inference_mode(): f()
    return _f

def fit(learn, a, pretrained, epochs=None, lr=None, freeze_epochs=None):
    "fastai's `fine_tune` for a pretrained body (frozen epochs, then all of it with discriminative lrs), else `fit_one_cycle` over as many epochs."
    epochs,lr,fe = epochs or a.epochs,lr or a.lr,a.freeze_epochs if freeze_epochs is None else freeze_epochs
    if pretrained: learn.fine_tune(epochs, lr, freeze_epochs=fe)
    else: learn.fit_one_cycle(fe+epochs, lr)

def run_model(name, mk, a, dev, scorer, ours, pretrained=False, score_epochs=False, **fit_kw):
    "Train (same seed for all), evaluate with pycocotools: a row of the table (speed columns later)."
    torch.manual_seed(0)
    t = time.perf_counter()
    learn = mk()
    log = EpochLog(scorer if score_epochs else None, ours)
    learn.add_cb(log)
    n_train = len(learn.dls.train_ds)
    with PeakMem(dev) as mem_fit:
        with learn.no_bar(), learn.no_logging(): fit(learn, a, pretrained, **fit_kw)
    learn.remove_cb(log)
    with PeakMem(dev) as mem_inf: dets = predict_valid(learn, ours)
    fit_s,n_ep = sum(log.times),len(log.times)
    print(f'   {name}: done in {time.perf_counter()-t:.0f}s (fit {fit_s:.0f}s, {n_ep} epochs)', flush=True)
    n_par = sum(p.numel() for p in learn.model.parameters())/1e6
    return dict(model=name, params=n_par, **scorer(dets), fit_ips=n_train*n_ep/fit_s, fit_s=fit_s, epochs=n_ep,
                times=log.times, epoch_scores=log.scores, mem_fit=mem_fit.extra, mem_inf=mem_inf.extra,
                learn=learn, dets=dets, ours=ours)

def speed(rows, a, dev):
    "Training step, and latency at bs 1 and 32, of all models interleaved; the plain loop of ours next to its fastai step."
    fs = {}
    with contextlib.ExitStack() as st:
        for r in rows:
            learn = r['learn']; st.enter_context(learn.no_bar()); st.enter_context(learn.no_logging())
            bs = batches(learn)
            fs[(r['model'],'step')] = fastai_step(learn, bs)
            if r is rows[0]: fs[(r['model'],'plain')] = plain_step(learn, bs)
        t_step = interleaved(fs, dev, a.reps)
    lat = {}
    for bsz,reps in [(1, a.reps), (32, max(2, a.reps//2))]:
        t = interleaved({r['model']:predictor(r['learn'], r['ours'], a, dev, bsz) for r in rows}, dev, reps)
        for k,v in t.items(): lat[(k,bsz)] = v/bsz
    for r in rows:
        r['step_ips'] = a.bs/t_step[(r['model'],'step')]
        r['lat1'],r['lat32'] = lat[(r['model'],1)]*1e3,lat[(r['model'],32)]*1e3
    ours = rows[0]['model']
    return t_step[(ours,'step')], t_step[(ours,'plain')]

# ---------------------------------------------------------------- the library's own parts
def loss_time(learn, a, dev):
    "Median time of `SSDLoss` forward+backward on the model's outputs for a training batch, and those outputs."
    model,lf = learn.model,learn.loss_func
    x,bb,lbl = (t.as_subclass(torch.Tensor) for t in batches(learn, 1)[0])
    with torch.no_grad(): preds = tuple(p.detach() for p in model.eval()(x))
    def loss_fb():
        ps = (preds[0].clone().requires_grad_(), preds[1].clone().requires_grad_(), preds[2])
        lf(ps, bb, lbl).backward()
    return median_time(loss_fb, dev, reps=a.reps), preds

def nms_loop_tv(scores, boxes, score_thresh=0.05, nms_thresh=0.5, max_det=100, pre_nms=1000):
    "torchvision-style post-processing, one image at a time: threshold, top-k, `batched_nms` by class, keep `max_det`."
    res = []
    for s,b in zip(scores, boxes):
        C = s.shape[1]
        top_s,top_i = s.flatten().topk(min(pre_nms, s.numel()))
        ok = top_s > score_thresh
        top_s,top_i = top_s[ok],top_i[ok]
        bx,cls = b[top_i//C],top_i%C
        keep = batched_nms(bx, top_s, cls, nms_thresh)[:max_det]
        res.append((bx[keep], cls[keep]+1, top_s[keep]))
    return res

def nms_bench(learn, preds, a, dev):
    "`decode_dets` (whole batch) against the per-image torchvision loop, on the trained model's outputs (score 0.01 to load NMS)."
    lf = learn.loss_func
    s,b = (t.as_subclass(torch.Tensor) for t in lf.activation(preds))
    ours = median_time(lambda: decode_dets(s, b, 0.01), dev, reps=a.reps)
    ref = median_time(lambda: nms_loop_tv(s, b, 0.01), dev, reps=a.reps)
    n_ours = int((decode_dets(s, b, 0.01)[1] > 0).sum()); n_ref = sum(len(r[0]) for r in nms_loop_tv(s, b, 0.01))
    return ours, ref, n_ours, n_ref, len(s)

def map_bench(scorer, dets, a):
    "Time (and value of) AP@[.5:.95] by the library, pycocotools and faster-coco-eval on the same detections."
    res = {}
    reps = max(3, a.reps//2)
    for lib,f in [('ssd_fastai.mean_ap', lambda: mean_ap(dets, scorer.gts, 'coco')),
                  ('pycocotools', lambda: scorer(dets, 'pycocotools')['ap']),
                  ('faster-coco-eval', lambda: scorer(dets, 'faster')['ap'])]:
        t = median_time(f, 'cpu', reps=reps, warmup=0)
        res[lib] = (t, f())
    return res

def print_parts(name, base, scorer, a, dev, fa, plain):
    "Timings of the library's own parts on the learner of `base`."
    learn = base['learn']
    loss_t, preds = loss_time(learn, a, dev)
    print(f'\nssd_fastai parts ({name}, bs {a.bs}, median of {a.reps}):')
    print(f'- training step (interleaved): fastai Learner.one_batch {fa*1e3:.0f} ms, plain PyTorch loop {plain*1e3:.0f} ms '
          f'-> fastai overhead {fa/plain-1:+.0%}')
    print(f'- SSDLoss forward+backward {loss_t*1e3:.1f} ms = {loss_t/plain:.1%} of a plain step ({preds[0].shape[1]} anchors)')
    ours_t, ref_t, n_o, n_r, B = nms_bench(learn, preds, a, dev)
    print(f'- NMS (score>0.01, bs {B}): decode_dets {ours_t*1e3:.1f} ms vs per-image torchvision batched_nms loop '
          f'{ref_t*1e3:.1f} ms ({ref_t/ours_t:.2f}x); detections kept {n_o} vs {n_r}')
    res = map_bench(scorer, base['dets'], a)
    print('- AP@[.5:.95] of the same detections: ' + ', '.join(f'{k} {t*1e3:.0f} ms (AP {v:.4f})' for k,(t,v) in res.items()))

# ---------------------------------------------------------------- report
def fmt_table(rows, cols):
    w = [max(len(h), *(len(r[k]) for r in rows)) for k,h in cols]
    line = lambda vals: '| ' + ' | '.join(v.ljust(n) for v,n in zip(vals, w)) + ' |'
    return '\n'.join([line([h for _,h in cols]), '|' + '|'.join('-'*(n+2) for n in w) + '|'] + [line([r[k] for k,_ in cols]) for r in rows])

def acc_cells(r):
    "The accuracy cells of a row: mAP@0.5, AP@[.5:.95], AP small and the AP50 of each reported class."
    return dict(ap50=f"{r['ap50']:.3f}", ap=f"{r['ap']:.3f}", aps=f"{r['aps']:.3f}", **{f'c_{c}': f'{v:.3f}' for c,v in r['cls'].items()})

def acc_cols(rows): return [('ap50','mAP@0.5'), ('ap','AP@[.5:.95]'), ('aps','AP small')] + [(f'c_{c}', c) for c in rows[0]['cls']]

def speed_cells(r, base):
    if 'step_ips' not in r: return dict(step='-', lat1='-', lat32='-')
    return dict(step=f"{r['step_ips']:.1f} ({r['step_ips']/base['step_ips']:.2f}x)", lat1=f"{r['lat1']:.1f} ({r['lat1']/base['lat1']:.2f}x)",
                lat32=f"{r['lat32']:.2f} ({r['lat32']/base['lat32']:.2f}x)")

SPEED_COLS = [('step','train step img/s (vs ours)'), ('lat1','ms/img bs1 (vs ours)'), ('lat32','ms/img bs32 (vs ours)')]

def prepare(name, a, dev):
    "The data of `name` and its scorer, or None; prints the header of its section."
    src = load_data(name, a)
    if src is None: return None
    torch.manual_seed(0)
    probe = make_dls(src, a, dev)
    scorer = Scorer(probe.valid.items, probe.vocab)
    how = (f'{a.arch} pretrained, fine_tune: {a.freeze_epochs} frozen + {a.epochs} epochs, base lr {a.lr}' if a.pretrained else
           f'{a.epochs} epochs, lr {a.lr}, {a.arch} from scratch')
    print(f'\n## {name}: {len(probe.train_ds)} train / {len(probe.valid_ds)} valid images, {len(probe.vocab)-1} classes, '
          f'{a.size}px, bs {a.bs}, {how}')
    return src, scorer

def bench_dataset(name, a, dev):
    "All models from scratch, same schedule: accuracy, speed, memory, and the library's parts."
    prep = prepare(name, a, dev)
    if prep is None: return
    src, scorer = prep
    makers = [('ssd_fastai', partial(ours_learner, src, a, dev), True)]
    makers += [(f'tv {k}', partial(tv_learner, k, src, a, dev), False) for k in a.tv]
    rows = [run_model(n, mk, a, dev, scorer, ours) for n,mk,ours in makers]
    print('   timing training steps and inference, all models interleaved...', flush=True)
    fa, plain = speed(rows, a, dev)
    base = rows[0]
    tab = [dict(model=r['model'], params=f"{r['params']:.1f}M", ap50=f"{r['ap50']:.3f}", ap=f"{r['ap']:.3f}", fit=f"{r['fit_ips']:.1f}",
                **speed_cells(r, base), mem=f"{r['mem_fit']:.0f} / {r['mem_inf']:.0f}") for r in rows]
    print(fmt_table(tab, [('model','model'), ('params','params'), ('ap50','mAP@0.5'), ('ap','AP@[.5:.95]'), ('fit','fit img/s'),
                          *SPEED_COLS, ('mem','+MiB train / eval')]))
    print_parts(name, base, scorer, a, dev, fa, plain)

def parse_variant(s):
    "'NAME=DICT' -> (NAME, dict): settings of a variant of ours, a Python literal."
    name,_,kw = s.partition('=')
    kw = ast.literal_eval(kw) if kw else {}
    if not isinstance(kw, dict): raise SystemExit(f'--variant {s}: the settings must be a dict literal')
    return name, kw

def variant_maker(src, a, dev, kw):
    "The learner maker and fit settings of a variant: keys `lr`, `freeze_epochs`, `epochs` go to the schedule, the rest to `ours_learner`."
    fit_kw = {k:kw[k] for k in ('lr', 'freeze_epochs', 'epochs') if k in kw}
    mk_kw = {k:v for k,v in kw.items() if k not in fit_kw}
    return partial(ours_learner, src, a, dev, True, **mk_kw), fit_kw

def equal_time_epochs(r, target_s, a):
    "Unfrozen epochs that make the fit of row `r` last `target_s` seconds: its frozen epochs' time, then its median unfrozen epoch."
    frozen,unfrozen = r['times'][:a.freeze_epochs],r['times'][a.freeze_epochs:]
    return max(1, round((target_s-sum(frozen))/statistics.median(unfrozen)))

def bench_pretrained(name, a, dev):
    "Fine-tuning from ImageNet weights: ours against torchvision's heads at equal epochs and at equal time, ours from scratch epoch by epoch."
    prep = prepare(name, a, dev)
    if prep is None: return
    src, scorer = prep
    rows = [run_model('ssd_fastai', partial(ours_learner, src, a, dev, True), a, dev, scorer, True, True, score_epochs=True)]
    variants = [run_model(f'ssd_fastai {n}', mk, a, dev, scorer, True, True, score_epochs=True, **fkw)
                for n,mk,fkw in [(n, *variant_maker(src, a, dev, kw)) for n,kw in map(parse_variant, a.variant)]]
    scratch = ([run_model('ssd_fastai scratch', partial(ours_learner, src, a, dev, False), a, dev, scorer, True, False, score_epochs=True)]
               if a.scratch else [])
    rows += [run_model(f'tv {k}', partial(tv_learner, k, src, a, dev, True), a, dev, scorer, False, True) for k in a.tv]
    base = rows[0]
    timed = []
    if a.equal_time:
        for r in rows[1:]:
            n = equal_time_epochs(r, base['fit_s'], a)
            if n == a.epochs: timed.append(dict(r, same=True)); continue
            kind = r['model'].split()[-1]
            timed.append(run_model(r['model'], partial(tv_learner, kind, src, a, dev, True), a, dev, scorer, False, True, epochs=n))
    print('   timing training steps and inference, all models interleaved...', flush=True)
    fa, plain = speed(rows, a, dev)
    print(f'\nEqual epochs ({a.freeze_epochs} frozen + {a.epochs}), all from ImageNet weights but "scratch"; pycocotools on the '
          f'validation images, VOC difficult objects ignored; AP50 per class:')
    cols = [('model','model'), ('params','params'), *acc_cols(rows), ('fit_s','fit s'), *SPEED_COLS]
    tab = [dict(model=r['model'], params=f"{r['params']:.1f}M", **acc_cells(r), fit_s=f"{r['fit_s']:.0f}", **speed_cells(r, base))
           for r in rows[:1]+variants+scratch+rows[1:]]
    print(fmt_table(tab, cols))
    if timed:
        print(f"\nEqual time: each torchvision model trained for about the {base['fit_s']:.0f}s ours took ({a.freeze_epochs} frozen "
              f"epoch(s), then as many unfrozen ones as fit, from its own epoch times above):")
        tab = [dict(model=r['model'], epochs=f"{a.freeze_epochs}+{r['epochs']-a.freeze_epochs}" + (' (same run)' if r.get('same') else ''),
                    fit_s=f"{r['fit_s']:.0f}", **acc_cells(r)) for r in [base]+timed]
        print(fmt_table(tab, [('model','model'), ('epochs','epochs'), ('fit_s','fit s'), *acc_cols(rows)]))
    ep_rows = [base]+variants+scratch
    print('\nAfter every epoch (mAP@0.5 / AP@[.5:.95]; "frozen": body frozen in the pretrained runs):')
    tab = []
    for i in range(max(len(r['epoch_scores']) for r in ep_rows)):
        d = dict(epoch=f"{i+1}" + (' frozen' if i < a.freeze_epochs else ''))
        for r in ep_rows:
            s = r['epoch_scores'][i] if i < len(r['epoch_scores']) else None
            d[r['model']] = f"{s['ap50']:.3f} / {s['ap']:.3f}" if s else '-'
        tab.append(d)
    print(fmt_table(tab, [('epoch','epoch')] + [(r['model'], r['model']) for r in ep_rows]))
    if scratch:
        ahead = [p['ap50'] > s['ap50'] and p['ap'] > s['ap'] for p,s in zip(base['epoch_scores'], scratch[0]['epoch_scores'])]
        print(f'- pretrained ahead of scratch on both mAP@0.5 and AP after {sum(ahead)} of {len(ahead)} epochs')
    print_parts(name, base, scorer, a, dev, fa, plain)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data', default=None, help='shapes, bccd, coco128, voc (default: shapes,bccd,coco128; voc with --pretrained)')
    p.add_argument('--epochs', type=int, default=None); p.add_argument('--size', type=int, default=None)
    p.add_argument('--bs', type=int, default=None); p.add_argument('--lr', type=float, default=None)
    p.add_argument('--arch', default=None, help='timm body (default: resnet18; tf_efficientnet_lite0 with --pretrained)')
    p.add_argument('--pretrained', action='store_true', help="fine-tune from timm's ImageNet weights (fastai's fine_tune) for all models")
    p.add_argument('--freeze-epochs', type=int, default=None, help='with --pretrained: epochs with the body frozen first')
    p.add_argument('--no-scratch', dest='scratch', action='store_false', help='with --pretrained: no run of ours from scratch')
    p.add_argument('--no-equal-time', dest='equal_time', action='store_false', help='with --pretrained: no equal-time runs')
    p.add_argument('--variant', action='append', default=[], metavar="NAME=DICT",
                   help="with --pretrained: another run of ours with these settings, e.g. \"s8={'strides':(8,16,32,64)}\" "
                        "(keys: lr, freeze_epochs, epochs, size, aug, loss (SSDLoss kwargs), or any ssd_learner/ssd_model argument)")
    p.add_argument('--n-shapes', type=int, default=None)
    p.add_argument('--max-images', type=int, default=None, help='keep the first N records of the real sets (of each split for voc)')
    p.add_argument('--reps', type=int, default=None); p.add_argument('--tv', default='retinanet,ssd,ssdlite')
    p.add_argument('--data-root', default=None, help='folder of the real sets (default: ssd_fastai.records.local_datasets())')
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--workers', type=int, default=None, help='data loading processes (default: 0 on the CPU, 12 on a GPU)')
    p.add_argument('--gpu', action='store_true'); p.add_argument('--quick', action='store_true')
    a = p.parse_args()
    # quick: tiny smoke test; CPU default: ~19 min on 2 cores; GPU: bigger, closer to real training; pretrained: VOC in ~30 min
    d = (dict(epochs=2, size=64, bs=16, n_shapes=80, max_images=40, reps=4) if a.quick else
         dict(epochs=20, size=320, bs=32, n_shapes=1500, max_images=None, reps=7) if a.gpu else
         dict(epochs=4, size=128, bs=16, n_shapes=600, max_images=None, reps=5) if a.pretrained else
         dict(epochs=10, size=128, bs=16, n_shapes=600, max_images=None, reps=5))
    d |= (dict(data='voc', arch='tf_efficientnet_lite0', lr=1e-3, freeze_epochs=2) if a.pretrained else
          dict(data='shapes,bccd,coco128', arch='resnet18', lr=1e-3, freeze_epochs=0))
    if a.quick and a.pretrained: d['freeze_epochs'] = 1
    d['workers'] = 12 if a.gpu and not a.quick else 0
    for k,v in d.items():
        if getattr(a, k) is None: setattr(a, k, v)
    a.tv = [t for t in a.tv.split(',') if t]
    if a.variant and not a.pretrained: raise SystemExit('--variant needs --pretrained')
    if a.threads: torch.set_num_threads(a.threads)
    dev = 'cuda' if a.gpu and torch.cuda.is_available() else 'cpu'
    if a.gpu and dev == 'cpu': print('--gpu: no GPU available, running on the CPU')
    what = torch.cuda.get_device_name() if dev == 'cuda' else f'CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads'
    print(f'# compare.py on {what}; torch {torch.__version__}, timm {timm.__version__}; load average {os.getloadavg()[0]:.1f}')
    print(f'# {" ".join(sys.argv[1:])}')
    t = time.perf_counter()
    for name in a.data.split(','): (bench_pretrained if a.pretrained else bench_dataset)(name, a, dev)
    print(f'\ntotal {time.perf_counter()-t:.0f}s; load average now {os.getloadavg()[0]:.1f}')

if __name__ == '__main__': main()
