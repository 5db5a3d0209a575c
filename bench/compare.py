"""Peer benchmark: `ssd_learner` against torchvision's RetinaNet, SSD and SSDlite on the same timm body.

Every model is trained from scratch (`pretrained=False`) on the same `DataLoaders` (same augmentation, size, batch
size, epochs), as a fastai `Learner` with the same `fit_one_cycle(epochs, lr)` (Adam, one-cycle, fastai's defaults):
the torchvision models are wrapped in a module that returns the sum of their own losses, with a callback handing it
the batch's targets (pixel xyxy, labels 1..C, padding rows dropped). All are then evaluated by pycocotools on the
validation set in the pixels of the original images (mAP@0.5, AP@[.5:.95]), and timed on the same machine:
the whole fit (images/s, data loading included), then, after training, all models interleaved round-robin (fair on
a busy machine; medians): a training step through fastai (`Learner.one_batch`, data loading excluded), inference
latency per image at bs 1 and bs 32 (normalise + model + decoding + NMS, as deployed: `to_detector()` for ours,
the torchvision model in eval mode for the others), and the memory each phase adds (peak RSS above its start on
CPU, `max_memory_allocated` on GPU). Then the library's own parts: fastai's overhead (the `ssd_learner` step
against a plain PyTorch loop over the same model, loss and batches, interleaved), the loss, `decode_dets` against
a per-image torchvision `batched_nms` post-processing, and its mAP against pycocotools and faster-coco-eval on
the same detections (time and value).

    python bench/compare.py --quick                              # smoke test, ~3 min on 2 CPU cores
    python bench/compare.py                                      # CPU: shapes,bccd,coco128, ~19 min on 2 cores
    python bench/compare.py --gpu                                # one GPU: 20 epochs, 320 px, ~12 min on an H100

Real sets (/work/shared/data/bccd, /work/shared/data/coco128, or `--data-root`) are skipped when missing.
"""
import argparse, contextlib, io, os, statistics, sys, tempfile, threading, time, warnings
from collections import OrderedDict
from functools import partial
from pathlib import Path
import numpy as np, torch, torch.nn as nn, timm
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
from fastai.vision.all import Learner, Callback, CancelValidException, Adam
from torchvision.ops import FeaturePyramidNetwork, batched_nms
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD, SSDHead
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from ssd_fastai.records import read_voc, read_yolo, image_size
from ssd_fastai.shapes import make_shapes
from ssd_fastai.data import detection_dls
from ssd_fastai.learner import ssd_learner
from ssd_fastai.inference import decode_dets
from ssd_fastai.metrics import mean_ap
from ssd_fastai.boxes import scaled2pixels
from _timing import run_times

warnings.filterwarnings('ignore')

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

# ---------------------------------------------------------------- torchvision models on a timm body
class TimmFeatures(nn.Module):
    "A timm `features_only` body as a torchvision backbone: `OrderedDict` of feature maps, `out_channels`."
    def __init__(self, arch, out_indices):
        super().__init__()
        self.body = timm.create_model(arch, features_only=True, pretrained=False, out_indices=out_indices)
        self.channels = self.body.feature_info.channels()
    def forward(self, x): return OrderedDict((str(i), f) for i,f in enumerate(self.body(x)))

class FPNBackbone(nn.Module):
    "timm body (strides 8,16,32) + torchvision FPN with P6, P7: RetinaNet's P3-P7."
    def __init__(self, arch, nf=256):
        super().__init__()
        self.body = TimmFeatures(arch, (2,3,4))
        self.fpn = FeaturePyramidNetwork(self.body.channels, nf, extra_blocks=LastLevelP6P7(nf, nf))
        self.out_channels = nf
    def forward(self, x): return self.fpn(self.body(x))

def _extra(ni, nf):
    return nn.Sequential(nn.Conv2d(ni, nf, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(nf), nn.ReLU(inplace=True))

class SSDBackbone(nn.Module):
    "timm body's stride-16 and 32 maps + two stride-2 convs: the levels (16,32,64,128) `ssd_learner` predicts on by default."
    def __init__(self, arch, nf=256):
        super().__init__()
        self.body = TimmFeatures(arch, (3,4))
        self.extra = nn.ModuleList([_extra(self.body.channels[-1], nf), _extra(nf, nf)])
        self.out_channels = [*self.body.channels, nf, nf]
    def forward(self, x):
        xs = list(self.body(x).values())
        for e in self.extra: xs.append(e(xs[-1]))
        return OrderedDict((str(i), f) for i,f in enumerate(xs))

def tv_model(kind, arch, n_cls, size):
    "torchvision RetinaNet / SSD / SSDlite on `arch`, images normalised with timm's stats, no resizing, 100 dets."
    cfg = timm.create_model(arch, pretrained=False, num_classes=0).pretrained_cfg
    kw = dict(image_mean=list(cfg['mean']), image_std=list(cfg['std']))
    if kind == 'retinanet':
        sizes = tuple((s, int(s*2**(1/3)), int(s*2**(2/3))) for s in (32,64,128,256,512))
        sizes = tuple(tuple(max(4, round(v*size/640)) for v in t) for t in sizes)   # COCO's anchors scaled to the input
        anc = AnchorGenerator(sizes, ((0.5,1.,2.),)*5)
        return RetinaNet(FPNBackbone(arch), n_cls+1, min_size=size, max_size=size, anchor_generator=anc,
                         detections_per_img=100, **kw)
    bb = SSDBackbone(arch)
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

# ---------------------------------------------------------------- data
def load_data(name, a):
    "Records (or a path) of a dataset, or None when its folder is missing."
    if name == 'shapes':
        return make_shapes(Path(tempfile.gettempdir())/'ssd_fastai_compare_shapes', n=a.n_shapes, size=max(256, a.size))
    root = Path(a.data_root)/name
    if not root.exists(): print(f'-- {name}: {root} not found, skipped'); return None
    recs = read_voc(root) if name == 'bccd' else read_yolo(root)
    return recs[:a.max_images] if a.max_images else recs

def make_dls(src, a, dev):
    "The same `DataLoaders` for every model; the vocab is every class of the records (a small split may miss some in training)."
    vocab = sorted({l for r in src for l in r.labels}) if isinstance(src, list) else None
    return detection_dls(src, size=a.size, bs=a.bs, num_workers=a.workers, device=dev, seed=42, vocab=vocab)

def gt_coco(recs, vocab):
    "COCO ground-truth dict of the validation records, in the pixels of the original images; category id = vocab index."
    imgs,anns = [],[]
    for i,r in enumerate(recs):
        w,h = r.size if r.size else image_size(r.fname)
        imgs.append(dict(id=i+1, width=w, height=h))
        for b,l in zip(np.asarray(r.bboxes, float), r.labels):
            anns.append(dict(id=len(anns)+1, image_id=i+1, category_id=vocab.index(l)+1, bbox=[b[0], b[1], b[2]-b[0], b[3]-b[1]],
                             area=float((b[2]-b[0])*(b[3]-b[1])), iscrowd=0))
    return dict(images=imgs, annotations=anns, categories=[dict(id=i+1, name=v) for i,v in enumerate(vocab)])

def coco_eval(gt, dets, lib='pycocotools'):
    "(AP@[.5:.95], AP50) of per-image detections {'boxes' pixel xyxy,'labels','scores'} by pycocotools or faster-coco-eval."
    if lib == 'pycocotools': from pycocotools.coco import COCO; from pycocotools.cocoeval import COCOeval
    else: from faster_coco_eval import COCO, COCOeval_faster as COCOeval
    res = [dict(image_id=i+1, category_id=int(l), bbox=[float(b[0]), float(b[1]), float(b[2]-b[0]), float(b[3]-b[1])], score=float(s))
           for i,d in enumerate(dets) for b,l,s in zip(d['boxes'], d['labels'], d['scores'])]
    if not res: return 0., 0.
    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO(); g.dataset = gt; g.createIndex()
        d = g.loadRes(res)
        e = COCOeval(g, d, 'bbox'); e.evaluate(); e.accumulate(); e.summarize()
    return float(e.stats[0]), float(e.stats[1])

# ---------------------------------------------------------------- the models, as learners
def ours_learner(src, a, dev, n_cls):
    dls = make_dls(src, a, dev)
    return ssd_learner(dls, arch=a.arch, pretrained=False, metrics=[], cbs=[NoValid()])

def tv_learner(kind, src, a, dev, n_cls):
    dls = make_dls(src, a, dev)
    m = TVWrap(tv_model(kind, a.arch, n_cls, a.size), a.size)
    return Learner(dls, m, loss_func=tv_loss, opt_func=Adam, cbs=[TVTargets(), NoValid()])

@torch.inference_mode()
def predict_valid(learn, ours, dev):
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
    size = learn.dls.valid.one_batch()[0].shape[-1]   # the input side, S
    for d,r in zip(dets, recs):
        w,h = r.size if r.size else image_size(r.fname)
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

def run_model(name, mk, src, a, dev, n_cls, gt):
    "Train from scratch with fastai's one-cycle, evaluate with pycocotools: a row of the table (speed columns later)."
    learn = mk()
    n_train = len(learn.dls.train_ds)
    with PeakMem(dev) as mem_fit:
        with learn.no_bar(), learn.no_logging():
            t = time.perf_counter(); learn.fit_one_cycle(a.epochs, a.lr); fit_s = time.perf_counter()-t
    ours = name == 'ssd_fastai'
    with PeakMem(dev) as mem_inf: dets = predict_valid(learn, ours, dev)
    ap, ap50 = coco_eval(gt, dets)
    n_par = sum(p.numel() for p in learn.model.parameters())/1e6
    return dict(model=name, params=n_par, ap50=ap50, ap=ap, fit_ips=n_train*a.epochs/fit_s, fit_s=fit_s,
                mem_fit=mem_fit.extra, mem_inf=mem_inf.extra, learn=learn, dets=dets, ours=ours)

def speed(rows, a, dev):
    "Training step, and latency at bs 1 and 32, of all models interleaved; the plain loop of ours next to its fastai step."
    fs = {}
    with contextlib.ExitStack() as st:
        for r in rows:
            learn = r['learn']; st.enter_context(learn.no_bar()); st.enter_context(learn.no_logging())
            bs = batches(learn)
            fs[(r['model'],'step')] = fastai_step(learn, bs)
            if r['ours']: fs[(r['model'],'plain')] = plain_step(learn, bs)
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

def map_bench(gt, dets, a):
    "Time (and value of) AP@[.5:.95] by the library, pycocotools and faster-coco-eval on the same detections."
    res = {}
    lib_gts = [dict(boxes=np.zeros((0,4)), labels=np.zeros(0, int)) for _ in gt['images']]
    for an in gt['annotations']:
        g = lib_gts[an['image_id']-1]; x,y,w,h = an['bbox']
        g['boxes'] = np.concatenate([g['boxes'], [[x,y,x+w,y+h]]]); g['labels'] = np.append(g['labels'], an['category_id'])
    reps = max(3, a.reps//2)
    for lib,f in [('ssd_fastai.mean_ap', lambda: mean_ap(dets, lib_gts, 'coco')),
                  ('pycocotools', lambda: coco_eval(gt, dets, 'pycocotools')[0]),
                  ('faster-coco-eval', lambda: coco_eval(gt, dets, 'faster')[0])]:
        t = median_time(f, 'cpu', reps=reps, warmup=0)
        res[lib] = (t, f())
    return res

# ---------------------------------------------------------------- report
def fmt_table(rows, cols):
    w = [max(len(h), *(len(r[k]) for r in rows)) for k,h in cols]
    line = lambda vals: '| ' + ' | '.join(v.ljust(n) for v,n in zip(vals, w)) + ' |'
    return '\n'.join([line([h for _,h in cols]), '|' + '|'.join('-'*(n+2) for n in w) + '|'] + [line([r[k] for k,_ in cols]) for r in rows])

def bench_dataset(name, a, dev):
    src = load_data(name, a)
    if src is None: return
    torch.manual_seed(0)
    probe = make_dls(src, a, dev)
    n_cls, recs = len(probe.vocab)-1, probe.valid.items
    gt = gt_coco(recs, list(probe.vocab[1:]))
    print(f'\n## {name}: {len(probe.train_ds)} train / {len(recs)} valid images, {n_cls} classes, {a.size}px, bs {a.bs}, '
          f'{a.epochs} epochs, lr {a.lr}, {a.arch} from scratch')
    makers = [('ssd_fastai', partial(ours_learner, src, a, dev, n_cls))]
    makers += [(f'tv {k}', partial(tv_learner, k, src, a, dev, n_cls)) for k in a.tv]
    rows = []
    for mname,mk in makers:
        torch.manual_seed(0)
        t = time.perf_counter()
        r = run_model(mname, mk, src, a, dev, n_cls, gt); rows.append(r)
        print(f'   {mname}: done in {time.perf_counter()-t:.0f}s', flush=True)
    print('   timing training steps and inference, all models interleaved...', flush=True)
    fa, plain = speed(rows, a, dev)
    base = rows[0]
    tab = [dict(model=r['model'], params=f"{r['params']:.1f}M", ap50=f"{r['ap50']:.3f}", ap=f"{r['ap']:.3f}",
                step=f"{r['step_ips']:.1f} ({r['step_ips']/base['step_ips']:.2f}x)", fit=f"{r['fit_ips']:.1f}",
                lat1=f"{r['lat1']:.1f} ({r['lat1']/base['lat1']:.2f}x)", lat32=f"{r['lat32']:.2f} ({r['lat32']/base['lat32']:.2f}x)",
                mem=f"{r['mem_fit']:.0f} / {r['mem_inf']:.0f}") for r in rows]
    print(fmt_table(tab, [('model','model'), ('params','params'), ('ap50','mAP@0.5'), ('ap','AP@[.5:.95]'),
                          ('fit','fit img/s'), ('step','train step img/s (vs ours)'), ('lat1','ms/img bs1 (vs ours)'),
                          ('lat32','ms/img bs32 (vs ours)'), ('mem','+MiB train / eval')]))
    learn = base['learn']
    loss_t, preds = loss_time(learn, a, dev)
    print(f'\nssd_fastai parts ({name}, bs {a.bs}, median of {a.reps}):')
    print(f'- training step (interleaved): fastai Learner.one_batch {fa*1e3:.0f} ms, plain PyTorch loop {plain*1e3:.0f} ms '
          f'-> fastai overhead {fa/plain-1:+.0%}')
    print(f'- SSDLoss forward+backward {loss_t*1e3:.1f} ms = {loss_t/plain:.1%} of a plain step ({preds[0].shape[1]} anchors)')
    ours_t, ref_t, n_o, n_r, B = nms_bench(learn, preds, a, dev)
    print(f'- NMS (score>0.01, bs {B}): decode_dets {ours_t*1e3:.1f} ms vs per-image torchvision batched_nms loop '
          f'{ref_t*1e3:.1f} ms ({ref_t/ours_t:.2f}x); detections kept {n_o} vs {n_r}')
    res = map_bench(gt, base['dets'], a)
    print('- AP@[.5:.95] of the same detections: ' + ', '.join(f'{k} {t*1e3:.0f} ms (AP {v:.4f})' for k,(t,v) in res.items()))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data', default='shapes,bccd,coco128')
    p.add_argument('--epochs', type=int, default=None); p.add_argument('--size', type=int, default=None)
    p.add_argument('--bs', type=int, default=None); p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--arch', default='resnet18'); p.add_argument('--n-shapes', type=int, default=None)
    p.add_argument('--max-images', type=int, default=None, help='keep the first N records of the real sets')
    p.add_argument('--reps', type=int, default=None); p.add_argument('--tv', default='retinanet,ssd,ssdlite')
    p.add_argument('--data-root', default='/work/shared/data'); p.add_argument('--threads', type=int, default=None)
    p.add_argument('--workers', type=int, default=None, help='data loading processes (default: 0 on the CPU, 12 on a GPU)')
    p.add_argument('--gpu', action='store_true'); p.add_argument('--quick', action='store_true')
    a = p.parse_args()
    # quick: tiny smoke test; CPU default: ~19 min on 2 cores; GPU: bigger, closer to real training
    d = (dict(epochs=2, size=64, bs=16, n_shapes=80, max_images=40, reps=4) if a.quick else
         dict(epochs=20, size=320, bs=32, n_shapes=1500, max_images=None, reps=7) if a.gpu else
         dict(epochs=10, size=128, bs=16, n_shapes=600, max_images=None, reps=5))
    d['workers'] = 12 if a.gpu and not a.quick else 0
    for k,v in d.items():
        if getattr(a, k) is None: setattr(a, k, v)
    a.tv = [t for t in a.tv.split(',') if t]
    if a.threads: torch.set_num_threads(a.threads)
    dev = 'cuda' if a.gpu and torch.cuda.is_available() else 'cpu'
    if a.gpu and dev == 'cpu': print('--gpu: no GPU available, running on the CPU')
    what = torch.cuda.get_device_name() if dev == 'cuda' else f'CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads'
    print(f'# compare.py on {what}; torch {torch.__version__}, timm {timm.__version__}; load average {os.getloadavg()[0]:.1f}')
    print(f'# {" ".join(sys.argv[1:])}')
    t = time.perf_counter()
    for name in a.data.split(','): bench_dataset(name, a, dev)
    print(f'\ntotal {time.perf_counter()-t:.0f}s; load average now {os.getloadavg()[0]:.1f}')

if __name__ == '__main__': main()
