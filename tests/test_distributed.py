"""Training through fastai's Accelerate integration (`from fastai.distributed import *`, `learn.distrib_ctx()`),
as 2 CPU processes talking over gloo, launched with `torchrun --nproc_per_node 2`.

Two things are needed on CPU that a GPU run does not need, both done by the script below, not by the library:
- `ACCELERATE_USE_CPU=true` in the environment: `Accelerator`'s state is a singleton, and `rank0_first` creates the
  first one without `cpu=True`; without the variable it finds no GPU, settles on "not distributed", and the model is
  never wrapped (fastai then fails with "'SSDModel' object has no attribute 'device'").
- fastai's `DistributedDL._broadcast` moves the indices to `.cuda()` (written for nccl); the script replaces it by a
  CPU broadcast, which gloo supports.
(`accelerate launch --cpu --num_processes 2` starts a single process without MPI, so `torchrun` launches the test.)
It also checks that the mAP the two processes compute is that of the whole validation set. About 30 s on 2 idle cores."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest, torch

pytest.importorskip('accelerate')

SCRIPT = """"Train a small SSD for one epoch on 2 CPU processes through fastai's Accelerate integration; rank 0 writes the result."
import json, os, sys, warnings
warnings.simplefilter('ignore')
import torch, torch.distributed as dist
from fastai.vision.all import *
from fastai.distributed import *
import fastai.distributed as fd
from ssd_fastai.all import *

def _broadcast_cpu(self, t, rank):   # fastai's DistributedDL broadcasts with `.cuda()` (nccl); with gloo a CPU tensor works
    t = torch.tensor(t, dtype=torch.long)
    dist.broadcast(t, rank)
    return t.tolist()
fd.DistributedDL._broadcast = _broadcast_cpu

out = Path(sys.argv[1])
torch.set_num_threads(1)
set_seed(0)
path = rank0_first(make_shapes, out/'shapes', n=35, size=48)
dls = detection_dls(path, size=48, bs=4, num_workers=0, seed=0)
learn = ssd_learner(dls, arch='resnet10t', pretrained=False)
learn.loss_func.decoder = DetDecoder(score_thresh=0.)   # many detections: a score on every image
with learn.distrib_ctx(sync_bn=False, cpu=True), learn.no_bar(): learn.fit(1, 1e-3)
rank, world = rank_distrib(), num_distrib()
n_batches = len(learn.recorder.losses)
(out/f'rank{rank}.json').write_text(json.dumps(dict(rank=rank, world=world, n_batches=n_batches, initialized=dist.is_initialized(),
                                                  backend=dist.get_backend() if dist.is_initialized() else None)))
if rank==0:
    torch.save(learn.model.state_dict(), out/'model.pth')
    (out/'result.json').write_text(json.dumps(dict(world=world, losses=[float(l) for l in learn.recorder.losses],
                                                  values=[None if v is None else float(v) for v in learn.recorder.values[-1]],
                                                  names=list(learn.recorder.metric_names[1:-1]), n_train=len(dls.train_ds),
                                                  n_valid=len(dls.valid_ds))))
"""

def test_two_cpu_processes(tmp_path):
    (tmp_path/'train_ddp.py').write_text(SCRIPT)
    out = tmp_path/'out'; out.mkdir()
    torchrun = Path(sys.executable).parent/'torchrun'
    cmd = [str(torchrun)] if torchrun.exists() else [sys.executable, '-m', 'torch.distributed.run']
    env = dict(os.environ, ACCELERATE_USE_CPU='true', OMP_NUM_THREADS='1')
    r = subprocess.run(cmd + ['--standalone', '--nproc_per_node', '2', str(tmp_path/'train_ddp.py'), str(out)],
                       capture_output=True, text=True, timeout=500, env=env, cwd=tmp_path)
    assert r.returncode==0, r.stderr[-4000:]
    ranks = [json.loads((out/f'rank{i}.json').read_text()) for i in range(2)]
    assert [d['rank'] for d in ranks]==[0, 1] and all(d['world']==2 and d['initialized'] and d['backend']=='gloo' for d in ranks)
    res = json.loads((out/'result.json').read_text())
    # each rank gets half of the batches of the epoch (fastai's DistributedDL)
    assert ranks[0]['n_batches']==ranks[1]['n_batches']==-(-res['n_train']//2)//4   # each process: half the images (rounded up), in full batches
    assert res['world']==2 and all(l==l and abs(l)<1e4 for l in res['losses'])
    vals = dict(zip(res['names'], res['values']))
    assert all(v is not None and v==v and abs(v)<1e4 for v in vals.values()), vals
    # the mAP the two processes computed is that of the whole validation set: the same model, validated in one process
    import warnings
    from fastai.torch_core import set_seed
    from ssd_fastai.data import detection_dls
    from ssd_fastai.learner import ssd_learner
    from ssd_fastai.inference import DetDecoder
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        set_seed(0)
        dls = detection_dls(out/'shapes', size=48, bs=4, num_workers=0, seed=0)
    assert len(dls.valid_ds) == res['n_valid'] and res['n_valid'] % 2 == 1   # fastai repeats an image to give 2 processes equal shares
    learn = ssd_learner(dls, arch='resnet10t', pretrained=False)
    learn.model.load_state_dict(torch.load(out/'model.pth'))
    learn.loss_func.decoder = DetDecoder(score_thresh=0.)
    with learn.no_bar(): single = dict(zip(res['names'][1:], learn.validate()))
    assert single['mAP50'] > 0
    for k in ('mAP50', 'mAP'): assert vals[k] == pytest.approx(single[k], abs=1e-6), (k, vals[k], single[k])
