"""Benchmark: batched `SSDLoss` against the per-image reference `ssd_loss_loop`, and the loss as a fraction of a
resnet34 training step. Run by hand: `python bench/bench_loss.py [--threads N]` (about 30 s on 2 CPU cores).

Times are forward + backward of the loss (what a training step pays), medians of several repeats: wall-clock time,
and the process's CPU time (all threads), which is steadier on a machine shared with other jobs. On a busy machine
`--threads 1` gives the steadiest numbers: with 2 threads, every multi-threaded op waits for a descheduled thread.

Measured on 2 idle AMD EPYC cores, `--threads 1`, torch 2.14.1: 189 anchors 7.4 ms vs 38.1 ms per-image (5.1x);
6300 anchors 255 ms vs 462 ms (1.8x); SSDLoss is 0.9% (2385 anchors, the default head) and 2.8% (9441 anchors, FPN)
of a resnet34 224 px bs 16 training step. With the lesson's 189 anchors the batched loss removes the per-image Python
overhead; with thousands of anchors both versions spend their time on the same arithmetic (IoUs, and the focal
loss's softplus and sigmoid over B x A x C logits, about two thirds of the batched time here), so the ratio is bounded by
how much less memory traffic the batched one makes. (An earlier run on another, loaded machine measured 6.6x and
4.2x in CPU time: the elementwise kernels' speed depends on the CPU.)"""
import argparse, statistics, sys
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
from ssd_fastai.anchors import anchor_boxes, SSDCoder, LESSON_ZOOMS
from ssd_fastai.loss import SSDLoss, ssd_loss_loop
from _timing import run_times

def median_time(f, reps=5, warmup=1):
    "Median wall time and median CPU time of `f()` in seconds."
    ws,cs = run_times({'f': f}, reps, warmup)['f']
    return statistics.median(ws),statistics.median(cs)

def rand_targets(bs, max_obj, n_cls, seed=0):
    "Padded targets: 0..`max_obj` objects per image of random sizes, padding (label 0) with garbage coordinates."
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(0, max_obj+1, (bs,), generator=g)
    M = max(int(n.max()), 1)
    ctr = torch.rand(bs, M, 2, generator=g)*1.6-0.8
    wh  = torch.rand(bs, M, 2, generator=g)**2*1.2+0.05
    bb  = torch.cat([ctr-wh/2, ctr+wh/2], -1).clamp(-1, 1)
    lbl = torch.randint(1, n_cls+1, (bs, M), generator=g) * (torch.arange(M)[None] < n[:,None])
    bb[lbl==0] = torch.rand(int((lbl==0).sum()), 4, generator=g)   # garbage padding
    return bb, lbl

def rand_preds(bs, anc, n_cls, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = len(anc)
    return (torch.randn(bs, A, n_cls, generator=g).requires_grad_(), torch.randn(bs, A, 4, generator=g).requires_grad_(),
            anc[None].expand(bs, -1, -1))

def fwd_bwd(f, preds, bb, lbl):
    "Forward and backward of a loss function."
    def _run():
        for p in preds[:2]: p.grad = None
        f(preds, bb, lbl).backward()
    return _run

def bench_loss(name, anc, bs=64, max_obj=50, n_cls=20, reps=5, ref_reps=3):
    coder = SSDCoder()
    preds, (bb, lbl) = rand_preds(bs, anc, n_cls), rand_targets(bs, max_obj, n_cls)
    loss_func = SSDLoss(coder)
    torch.testing.assert_close(loss_func(preds, bb, lbl), ssd_loss_loop(preds, bb, lbl, coder), rtol=1e-4, atol=1e-4)
    (wb,cb) = median_time(fwd_bwd(loss_func, preds, bb, lbl), reps)
    (wl,cl) = median_time(fwd_bwd(lambda p,b,l: ssd_loss_loop(p, b, l, coder), preds, bb, lbl), ref_reps)
    print(f'{name:<27} A={len(anc):>5} bs={bs} M={bb.shape[1]}  wall: batched {wb*1e3:7.1f} ms, per-image {wl*1e3:7.1f} ms, '
          f'speed-up {wl/wb:5.1f}x | cpu: {cb*1e3:7.1f} ms, {cl*1e3:7.1f} ms, {cl/cb:5.1f}x')
    return wl/wb, cl/cb

def bench_step(arch='resnet34', bs=16, size=224, n_cls=20, reps=3, **kwargs):
    "Loss (fwd+bwd) as a fraction of a full training step (model fwd, loss, bwd, SGD step)."
    from ssd_fastai.model import ssd_model
    model = ssd_model(arch, n_cls=n_cls, pretrained=False, **kwargs).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.rand(bs, 3, size, size)
    loss_func = SSDLoss()
    with torch.no_grad(): A = model(x[:1])[0].shape[1]
    bb, lbl = rand_targets(bs, 50, n_cls)
    def step():
        opt.zero_grad(); loss_func(model(x), bb, lbl).backward(); opt.step()
    t_step,_ = median_time(step, reps)
    with torch.no_grad(): out = model(x)
    preds = (out[0].clone().requires_grad_(), out[1].clone().requires_grad_(), out[2])
    t_loss,_ = median_time(fwd_bwd(loss_func, preds, bb, lbl), 5)
    print(f'{arch} {size}px bs {bs} (timm, pretrained=False), {A} anchors, head {kwargs or "default"}: step {t_step*1e3:.0f} ms, '
          f'SSDLoss fwd+bwd {t_loss*1e3:.1f} ms = {t_loss/t_step:.1%} of the step (wall)')
    return t_loss/t_step

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--no-step', action='store_true', help='skip the resnet34 training step')
    ap.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s)')
    args = ap.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads')
    bench_loss('lesson (4,2,1 x 9)', anchor_boxes([4,2,1], LESSON_ZOOMS))
    bench_loss('dense (28,14,7,4,2,1 x 6)', anchor_boxes([28,14,7,4,2,1], LESSON_ZOOMS, ratios=((1.,1.),(1.,.5))))
    if not args.no_step:
        bench_step()
        bench_step(strides=(8,16,32,64,128), fpn=True)
