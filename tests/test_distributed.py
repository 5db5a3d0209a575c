"""Training through fastai's Accelerate integration (`from fastai.distributed import *`, `learn.distrib_ctx()`),
as 2 CPU processes talking over gloo, launched with `torchrun --nproc_per_node 2`.

Two things are needed on CPU that a GPU run does not need, both done by the script below, not by the library:
- `ACCELERATE_USE_CPU=true` in the environment: `Accelerator`'s state is a singleton, and `rank0_first` creates the
  first one without `cpu=True`; without the variable it finds no GPU, settles on "not distributed", and the model is
  never wrapped (fastai then fails with "'SSDModel' object has no attribute 'device'").
- fastai's `DistributedDL._broadcast` moves the indices to `.cuda()` (written for nccl); the script replaces it by a
  CPU broadcast, which gloo supports.
(`accelerate launch --cpu --num_processes 2` starts a single process without MPI, so `torchrun` launches the test.)
About 25 s on 2 busy cores."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest

pytest.importorskip('accelerate')

SCRIPT = '"Train a small SSD for one epoch on 2 CPU processes through fastai\'s Accelerate integration; rank 0 writes the result."\nimport json, os, sys, warnings\nwarnings.simplefilter(\'ignore\')\nimport torch, torch.distributed as dist\nfrom fastai.vision.all import *\nfrom fastai.distributed import *\nimport fastai.distributed as fd\nfrom ssd_fastai.all import *\n\ndef _broadcast_cpu(self, t, rank):   # fastai\'s DistributedDL broadcasts with `.cuda()` (nccl); with gloo a CPU tensor works\n    t = torch.tensor(t, dtype=torch.long)\n    dist.broadcast(t, rank)\n    return t.tolist()\nfd.DistributedDL._broadcast = _broadcast_cpu\n\nout = Path(sys.argv[1])\ntorch.set_num_threads(1)\nset_seed(0)\npath = rank0_first(make_shapes, out/\'shapes\', n=32, size=48)\ndls = detection_dls(path, size=48, bs=4, num_workers=0, seed=0)\nlearn = ssd_learner(dls, arch=\'resnet10t\', pretrained=False)\nwith learn.distrib_ctx(sync_bn=False, cpu=True), learn.no_bar(): learn.fit(1, 1e-3)\nrank, world = rank_distrib(), num_distrib()\nn_batches = len(learn.recorder.losses)\n(out/f\'rank{rank}.json\').write_text(json.dumps(dict(rank=rank, world=world, n_batches=n_batches, initialized=dist.is_initialized(),\n                                                  backend=dist.get_backend() if dist.is_initialized() else None)))\nif rank==0:\n    (out/\'result.json\').write_text(json.dumps(dict(world=world, losses=[float(l) for l in learn.recorder.losses],\n                                                  values=[None if v is None else float(v) for v in learn.recorder.values[-1]],\n                                                  names=list(learn.recorder.metric_names[1:-1]), n_train=len(dls.train_ds))))\n'

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
    assert ranks[0]['n_batches']==ranks[1]['n_batches']==res['n_train']//4//2
    assert res['world']==2 and all(l==l and abs(l)<1e4 for l in res['losses'])
    vals = dict(zip(res['names'], res['values']))
    assert all(v is not None and v==v and abs(v)<1e4 for v in vals.values()), vals
