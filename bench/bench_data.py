"""Is the training DataLoader fast enough to feed the model?

Batches per second of `detection_dls(...).train` at 224 px, bs 32, with the default box-aware augmentation,
on `make_shapes` data, next to the time of one forward+backward step of a timm resnet34 (pretrained=False) on a
batch of the same size. A ratio (loader batches/s x step time) above 1 means the loader keeps up.

Run by hand: `python bench/bench_data.py [--n-batches 6] [--workers 0]` (about a minute on 2 CPU cores).
"""
import argparse, time, tempfile, warnings
from pathlib import Path
import torch, timm
from ssd_fastai.shapes import make_shapes
from ssd_fastai.data import detection_dls

def bench_loader(dl, n_batches):
    "Batches per second of `dl` over `n_batches`, after one warm-up batch."
    it = iter(dl)
    next(it)
    t = time.perf_counter()
    for _ in range(n_batches): next(it)
    return n_batches/(time.perf_counter()-t)

def bench_step(bs, size, n_steps):
    "Seconds per forward+backward step of a resnet34 (timm, random weights) on (bs,3,size,size)."
    model = timm.create_model('resnet34', pretrained=False, num_classes=0, global_pool='')
    x = torch.randn(bs, 3, size, size)
    model(x).mean().backward()   # warm-up
    t = time.perf_counter()
    for _ in range(n_steps):
        model.zero_grad()
        model(x).mean().backward()
    return (time.perf_counter()-t)/n_steps

if __name__=='__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n-batches', type=int, default=6)
    p.add_argument('--n-steps', type=int, default=1)
    p.add_argument('--workers', type=int, default=0)
    p.add_argument('--bs', type=int, default=32)
    p.add_argument('--size', type=int, default=224)
    a = p.parse_args()
    warnings.simplefilter('ignore')
    path = make_shapes(Path(tempfile.gettempdir())/'ssd_fastai_bench_shapes', n=a.bs*(a.n_batches+2), size=256)
    dls = detection_dls(path, size=a.size, bs=a.bs, valid_pct=0.1, num_workers=a.workers)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, {a.workers} workers, bs {a.bs}, {a.size}px')
    bps = bench_loader(dls.train, a.n_batches)
    step = bench_step(a.bs, a.size, a.n_steps)
    print(f'train DataLoader (augmented): {bps:.2f} batches/s ({1/bps*1000:.0f} ms/batch)')
    print(f'resnet34 forward+backward:    {step*1000:.0f} ms/step')
    print(f'ratio loader speed / model speed: {bps*step:.2f} ({"the loader keeps up" if bps*step>=1 else "the loader is the bottleneck"})')
