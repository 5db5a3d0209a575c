"""Benchmark of the main job: `ssd-fastai train` with all its defaults (synthetic shapes, resnet18 from scratch), timed
from the start (data generation included unless the set is already cached) to the exported model.
Target: mAP@0.5 >= 0.9 on its validation images in under 10 minutes on 2 CPU cores.

    python bench/bench_main.py [--out DIR]      # ~5-6 min on 2 CPU cores
"""
import argparse, sys, tempfile, time, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing
import torch
from ssd_fastai.cli import train

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default=None, help='output folder (default: a temporary one)')
    a = p.parse_args()
    warnings.filterwarnings('ignore')
    out = a.out or tempfile.mkdtemp(prefix='ssd_main_')
    print(f'# ssd-fastai train with its defaults, on {torch.get_num_threads()} torch threads; torch {torch.__version__}')
    t = time.perf_counter()
    res = train(out=out)
    el = time.perf_counter()-t
    met = res['mAP50'] >= 0.9 and el < 600
    print(f"main job: {el/60:.1f} min, mAP50 {res['mAP50']:.3f}, mAP {res['mAP']:.3f} "
          f"(target: mAP50 >= 0.9 in under 10 min: {'met' if met else 'NOT met'}); wrote {out}")
