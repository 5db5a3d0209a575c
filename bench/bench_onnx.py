"""ONNX Runtime and a `torch.export` program against eager PyTorch, on the deployable detector (normalise, model, decode, NMS).

Run by hand: `python bench/bench_onnx.py [--model ssd.pkl] [--arch resnet18] [--size 128] [--score-thresh 0.01]
[--reps 15] [--threads N]` (from the repository root, with the package installed or `PYTHONPATH=.`).

The same images (`make_shapes`, squished to `--size` as the export contract says) go, at bs 1 and bs 32, through
the `Detector` in eval mode under `torch.inference_mode` ("eager"), the file of `export_onnx` in ONNX Runtime (CPU
provider) and the file of `export_program` run by `torch.export.load(...).module()`; all with the same number of
threads, round-robin (`_timing.run_times`). Prints medians per image and the speed-up over eager (> 1: faster).
Without `--model` the detector is an untrained `ssd_learner` (`pretrained=False`): every class score sits near the
prior 0.01 of its output layer, so `--score-thresh 0.01` sends about half of the 1,000 candidates of each image into
NMS, a heavy decoding load. `--model` times an exported learner (`learn.export`) instead."""
import argparse, statistics, tempfile, warnings
warnings.filterwarnings('ignore', category=FutureWarning)   # fastai's use of torch.jit.script, at import
from pathlib import Path
import torch
import onnxruntime as ort
from fastai.learner import load_learner
from ssd_fastai.data import make_shapes, detection_dls
from ssd_fastai.inference import DetDecoder
from ssd_fastai.learner import ssd_learner
from ssd_fastai.deploy import export_onnx, export_program, image_batch
from _timing import run_times

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', help='an exported learner; default: an untrained ssd_learner')
    p.add_argument('--arch', default='resnet18'); p.add_argument('--size', type=int, default=128)
    p.add_argument('--score-thresh', type=float, default=0.01); p.add_argument('--reps', type=int, default=15)
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    path = make_shapes(n=64, size=a.size)
    if a.model: learn = load_learner(a.model)
    else: learn = ssd_learner(detection_dls(path, size=a.size, bs=16, num_workers=0), arch=a.arch, pretrained=False)
    learn.loss_func.decoder = DetDecoder(score_thresh=a.score_thresh)
    det = learn.to_detector()
    size = (a.size, a.size)
    tmp = Path(tempfile.mkdtemp())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads,opts.inter_op_num_threads = a.threads,1
    sess = ort.InferenceSession(export_onnx(det, tmp/'det.onnx', size=size), opts, providers=['CPUExecutionProvider'])
    prog = torch.export.load(export_program(det, tmp/'det.pt2', size=size)).module()
    x = image_batch(sorted((path/'images').iterdir())[:32], size)
    runs = dict(eager=lambda xb: det(xb), onnxruntime=lambda xb: sess.run(None, {'images': xb.numpy()}), program=lambda xb: prog(xb))
    with torch.inference_mode():
        n_det = {k: float((torch.as_tensor(f(x)[1]) > 0).sum())/len(x) for k,f in runs.items()}
        fs = {(k,bs): (lambda f=f,xb=x[:bs]: f(xb)) for bs in (1, 32) for k,f in runs.items()}
        walls = {k: w for k,(w,_) in run_times(fs, a.reps, warmup=2).items()}
    med = {k: statistics.median(w)/k[1]*1e3 for k,w in walls.items()}
    print(f'{a.model or a.arch + " (untrained)"}, {a.size}x{a.size} px, {a.threads} threads, score > {a.score_thresh}, '
          f'{a.reps} rounds; torch {torch.__version__}, onnxruntime {ort.__version__}')
    print('detections per image at bs 32: ' + ', '.join(f'{k} {v:.1f}' for k,v in n_det.items()))
    print('\n| bs | eager ms/img | ONNX Runtime ms/img (speed-up) | torch.export program ms/img (speed-up) |')
    print('|---|---|---|---|')
    for bs in (1, 32):
        e,o,g = med[('eager',bs)],med[('onnxruntime',bs)],med[('program',bs)]
        print(f'| {bs} | {e:.2f} | {o:.2f} ({e/o:.2f}x) | {g:.2f} ({e/g:.2f}x) |')

if __name__ == '__main__': main()
