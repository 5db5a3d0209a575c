"""Overhead of the SSD head and anchors relative to the body's forward, at 224 px on resnet34 (CPU or GPU).

Run by hand: `python bench/bench_head.py [--arch resnet34] [--bs 8] [--size 224] [--reps 7] [--fpn]`.
Prints the median forward time of the body, of the head + anchors on the body's features, and their ratio.
(Run from the repository root with the package installed, or with `PYTHONPATH=.`.)"""
import argparse, statistics, warnings
import torch
from ssd_fastai.anchors import anchor_boxes
from ssd_fastai.model import ssd_model
from _timing import run_times

warnings.filterwarnings('ignore', category=FutureWarning)

def median_times(fs, reps, sync):
    "Median and best wall time of each function in `fs`, run interleaved `reps` times after a warm-up (fair on a busy machine)."
    walls = [w for w,_ in run_times(dict(enumerate(fs)), reps, sync=sync).values()]
    return [statistics.median(w) for w in walls], [min(w) for w in walls]

def head_and_anchors(m, feats, n):
    "What `SSDModel.forward` adds to the body: the head, and the anchors (recomputed here, as on a size change)."
    clas, box, grids = m.head(feats)
    return clas, box, anchor_boxes(grids, m.zooms, m.ratios, m.clip_anchors).to(box.device)[None].expand(n, -1, -1)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arch', default='resnet34'); p.add_argument('--bs', type=int, default=8)
    p.add_argument('--size', type=int, default=224); p.add_argument('--reps', type=int, default=7)
    p.add_argument('--fpn', action='store_true', help='strides (8,16,32,64,128) with an FPN')
    a = p.parse_args()
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)
    kw = dict(strides=(8,16,32,64,128), fpn=True) if a.fpn else {}
    m = ssd_model(a.arch, n_cls=20, pretrained=False, **kw).to(dev).eval()
    x = torch.randn(a.bs, 3, a.size, a.size, device=dev)
    with torch.inference_mode():
        feats = m.body(x)
        A = m(x)[2].shape[1]
        (t_body, t_head, t_full), (b_body, b_head, _) = median_times([lambda: m.body(x), lambda: head_and_anchors(m, feats, a.bs), lambda: m(x)],
                                              a.reps, sync)
    print(f'{a.arch} bs={a.bs} {a.size}px on {dev} ({torch.get_num_threads()} threads), {A} anchors, grids {m.grids}')
    print(f'median of {a.reps}: body {t_body*1e3:.1f} ms, head+anchors {t_head*1e3:.1f} ms, whole model {t_full*1e3:.1f} ms')
    print(f'head+anchor overhead / body = {t_head/t_body:.1%} (medians), {b_head/b_body:.1%} (best runs)  (target < 10%)')

if __name__ == '__main__': main()
