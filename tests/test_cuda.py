"""The library on a GPU: the same matches and detections as on the CPU; training in fp32 and mixed precision,
prediction, export and resume from a checkpoint on the GPU. Skipped without one (`pytest -m cuda` runs them)."""
import pytest, torch
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.fp16 import MixedPrecision
from fastai.learner import load_learner
from fastai.torch_core import set_seed
from ssd_fastai.anchors import anchor_boxes
from ssd_fastai.boxes import cxcywh2xyxy
from ssd_fastai.callbacks import Checkpoint, load_checkpoint
from ssd_fastai.shapes import make_shapes
from ssd_fastai.data import detection_dls
from ssd_fastai.inference import decode_dets
from ssd_fastai.learner import ssd_learner
from ssd_fastai.loss import match_anchors, match_anchors_loop
from test_loss import rand_boxes

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')]


def test_match_anchors_on_gpu():
    "The GPU takes the whole batch in one IoU chunk (the CPU goes chunk by chunk): same matches as the per-image loop."
    g = torch.Generator().manual_seed(0)
    anc = cxcywh2xyxy(anchor_boxes([16,8,4,2,1]))
    bb, lbl = rand_boxes(16, 40, g=g, min_sz=0.02), torch.randint(0, 6, (16, 40), generator=g)
    idx, pos = match_anchors(anc.cuda(), bb.cuda(), lbl.cuda())
    ref_idx, ref_pos = match_anchors_loop(anc, bb, lbl)
    assert pos.is_cuda and pos.sum() > 0
    torch.testing.assert_close(pos.cpu(), ref_pos)
    torch.testing.assert_close(idx.cpu()[ref_pos], ref_idx[ref_pos])


def test_decode_dets_on_gpu():
    "torchvision's CUDA NMS kernel and the GPU's top-k and indexing give the same detections as the CPU."
    g = torch.Generator().manual_seed(0)
    scores = (torch.randperm(8*2000*5, generator=g)+1).view(8, 2000, 5)/(8*2000*5+1)   # distinct: no ties to order differently
    boxes = rand_boxes(8, 2000, g=g, min_sz=0.05)
    ref = decode_dets(scores, boxes, 0.05)
    res = decode_dets(scores.cuda(), boxes.cuda(), 0.05)
    assert (ref[1] > 0).sum() > 100
    for r,o in zip(ref, res): torch.testing.assert_close(o.cpu(), r)


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('cuda')
    return make_shapes(tmp/'shapes', n=64, size=64), tmp


def _learner(path, tmp, device='cuda'):
    set_seed(0)
    dls = detection_dls(path, size=64, bs=16, num_workers=0, device=device, seed=0)
    return ssd_learner(dls, arch='resnet18', pretrained=False, path=tmp, model_dir='.', strides=(8,16,32))


def _outputs(model, x):
    "Class and box activations of `model` (in eval mode) for `x`, on the CPU."
    with torch.no_grad(): clas,box,_ = model.eval()(x)
    return clas.float().cpu(), box.float().cpu()


@pytest.mark.parametrize('precision', ['fp32', 'fp16', 'bf16'])
def test_fit_predict_export_on_gpu(shapes, precision):
    path, tmp = shapes
    learn = _learner(path, tmp)
    if precision != 'fp32': learn.add_cb(MixedPrecision(amp_mode=precision))
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 3e-3)
    losses = torch.stack(learn.recorder.losses)
    assert torch.isfinite(losses).all() and losses[-3:].mean() < losses[:3].mean()
    assert all(torch.isfinite(torch.tensor(float(v))) for v in learn.recorder.values[-1])
    assert next(learn.model.parameters()).is_cuda

    imgs = sorted((path/'images').iterdir())[:4]
    dets = learn.predict_batch(imgs)
    det = learn.to_detector()                               # a CPU copy: the learner's model stays on the GPU
    assert next(learn.model.parameters()).is_cuda and not next(det.parameters()).is_cuda
    x = learn.dls.valid.one_batch()[0].as_subclass(torch.Tensor)
    for a,b in zip(_outputs(learn.model, x), _outputs(det.model, x.cpu())): torch.testing.assert_close(a, b, atol=2e-2, rtol=1e-2)

    learn.export(f'ssd_{precision}.pkl')
    cpu = load_learner(tmp/f'ssd_{precision}.pkl', cpu=True)
    assert not next(cpu.model.parameters()).is_cuda
    for (b,l,s),(b2,l2,s2) in zip(dets, cpu.predict_batch(imgs)):   # the best score of each image: no ordering of near-ties
        torch.testing.assert_close(s2[:1], s[:1], atol=1e-2, rtol=0)


class _StopAfter(Callback):
    "Stop `fit` after epoch `n` (0-based) has been checkpointed, as an interrupted run would."
    order = Checkpoint.order+1
    def __init__(self, n): self.n = n
    def after_epoch(self):
        if self.epoch == self.n: raise CancelFitException()


def test_checkpoint_resume_on_gpu(shapes):
    "A checkpoint written on the GPU resumes there (its random states go back to the CPU) and on a CPU learner."
    path, tmp = shapes
    learn = _learner(path, tmp)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(4, 3e-3, cbs=[Checkpoint('ck_gpu'), _StopAfter(1)])
    again = _learner(path, tmp)
    info = load_checkpoint(again, 'ck_gpu')
    assert info['epoch'] == 2
    ck = Checkpoint('ck_gpu', resume=info)
    with again.no_bar(), again.no_logging(): again.fit_one_cycle(4, 3e-3, start_epoch=ck.start_epoch, cbs=[ck, _StopAfter(2)])
    assert [h['epoch'] for h in ck.history] == [0, 1, 2] and next(again.model.parameters()).is_cuda
    assert all(torch.isfinite(torch.tensor(v)) for h in ck.history for v in h.values())

    cpu = _learner(path, tmp, 'cpu')
    ck = Checkpoint('ck_gpu', resume=load_checkpoint(cpu, 'ck_gpu'))
    with cpu.no_bar(), cpu.no_logging(): cpu.fit_one_cycle(4, 3e-3, start_epoch=ck.start_epoch, cbs=ck)
    assert [h['epoch'] for h in ck.history] == [0, 1, 2, 3] and not next(cpu.model.parameters()).is_cuda
