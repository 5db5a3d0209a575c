"""Time mAP evaluation: `ssd_fastai.metrics` against pycocotools and faster-coco-eval.

5,000 images x 100 detections, 20 classes, ~3 objects per image (Poisson), pixel boxes in 640x480 images:
each object is detected a few times with jitter, the rest of the 100 are random boxes of random classes.

Timed, for each library, from data already in its own format (COCO objects built and indexed outside the
timing, and their build time printed apart):
- ssd_fastai `coco_ap` (COCO AP at the 10 IoU thresholds, all classes) from lists of per-image numpy dicts;
- ssd_fastai `evaluate_detections` (COCO AP, AP50, AP75 + VOC07 and VOC AP + per-class table);
- pycocotools / faster-coco-eval `COCOeval` evaluate+accumulate+summarize with default params (4 area ranges x
  3 maxDets, what users run), and with only area 'all' and maxDets 100 (the same work as `coco_ap`).

    python bench/bench_map.py [--n_img 5000] [--reps 5] [--coco_reps 1]     (about 2.5 minutes on 2 shared CPU cores)
"""
import argparse, contextlib, io, statistics, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
from _timing import run_times
from ssd_fastai.metrics import coco_ap, evaluate_detections, to_coco

def make_data(n_img=5000, n_det=100, n_cls=20, mean_gt=3, seed=0):
    rng = np.random.default_rng(seed)
    W,H = 640,480
    def boxes(n):
        xy = rng.uniform(0, 1, (n,2)) * [W*.8, H*.8]
        return np.concatenate([xy, xy + rng.uniform(.03, .3, (n,2)) * [W, H]], 1)
    dets,gts = [],[]
    for _ in range(n_img):
        m = rng.poisson(mean_gt)
        gb,gl = boxes(m),rng.integers(1, n_cls+1, m)
        src = rng.integers(0, m, min(n_det, 3*m)) if m else np.zeros(0, int)
        wh = np.tile(gb[src,2:] - gb[src,:2], 2)
        tb = gb[src] + rng.normal(0, .1, (len(src),4)) * wh
        tb = np.concatenate([np.minimum(tb[:,:2], tb[:,2:]), np.maximum(tb[:,:2], tb[:,2:])], 1)
        nf = n_det - len(src)
        dets.append(dict(boxes=np.concatenate([tb, boxes(nf)]), labels=np.concatenate([gl[src], rng.integers(1, n_cls+1, nf)]),
                         scores=np.concatenate([rng.uniform(.3, 1, len(src)), rng.uniform(0, .8, nf)])))
        gts.append(dict(boxes=gb, labels=gl))
    return dets,gts

def coco_inputs(dets, gts, n_cls=20):
    "Ground truth as a COCO dataset and the detections as COCO results, through the library's `to_coco`."
    vocab = ['background', *map(str, range(1, n_cls+1))]
    return to_coco(gts, vocab, images=[dict(width=640, height=480)]*len(gts)),to_coco(dets, vocab)

def timed(f, reps):
    "Median wall time of `reps` calls of `f` (no warm-up: some take minutes), and its result."
    out = {}
    walls,_ = run_times({'f': lambda: out.update(res=f())}, reps, warmup=0)['f']
    return statistics.median(walls),out['res']

def cocoeval(lib, g, d, trimmed):
    "Build (untimed) and return a function running evaluate+accumulate+summarize."
    with contextlib.redirect_stdout(io.StringIO()):
        t = time.perf_counter()
        if lib == 'pycocotools':
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval as Eval
            cg = COCO(); cg.dataset = g; cg.createIndex()
        else:
            from faster_coco_eval import COCO, COCOeval_faster as Eval
            cg = COCO(g)
        cd = cg.loadRes(d)
        build = time.perf_counter() - t
    def run():
        with contextlib.redirect_stdout(io.StringIO()):
            E = Eval(cg, cd, 'bbox')
            if trimmed: E.params.areaRng,E.params.areaRngLbl,E.params.maxDets = [[0, 1e10]],['all'],[100]
            E.evaluate(); E.accumulate()
            if trimmed: return np.mean(E.eval['precision'][E.eval['precision'] > -1])
            E.summarize()
            return E.stats[0]
    return build,run

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--n_img', type=int, default=5000)
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--coco_reps', type=int, default=1)
    a = p.parse_args()
    dets,gts = make_data(a.n_img)
    print(f"{a.n_img} images, {sum(len(d['labels']) for d in dets)} detections, {sum(len(g['labels']) for g in gts)} objects, 20 classes")
    rows = []
    t,ap = timed(lambda: float(coco_ap(dets, gts).mean(axis=1).mean()), a.reps)
    rows.append(('ssd_fastai coco_ap', t, ap)); base = t
    t,r = timed(lambda: evaluate_detections(dets, gts), a.reps)
    rows.append(('ssd_fastai evaluate_detections (COCO+VOC)', t, r['AP']))
    g,d = coco_inputs(dets, gts)
    for lib,reps in (('faster_coco_eval', a.reps), ('pycocotools', a.coco_reps)):
        for trimmed in (False, True):
            build,run = cocoeval(lib, g, d, trimmed)
            t,ap = timed(run, reps)
            rows.append((f"{lib} {'area all, maxDets 100' if trimmed else 'default params'} (build {build:.2f}s untimed)", t, ap))
    print(f"{'':62s} {'median s':>9s} {'vs coco_ap':>10s} {'AP':>8s}")
    for name,t,ap in rows: print(f"{name:62s} {t:9.3f} {t/base:9.1f}x {ap:8.5f}")

if __name__ == '__main__': main()
