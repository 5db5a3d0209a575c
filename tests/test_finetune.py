"""Fine-tuning as a fastai user expects: `ssd_learner(dls, pretrained=True)` loads the body's weights and freezes it
(its BatchNorms still train, as in fastai's `vision_learner`), `unfreeze` and discriminative learning rates,
`fine_tune`, `lr_find`. The 'pretrained' weights are a small local file found the way downloaded ones are."""
import pytest, torch
from torch import nn
from fastai.callback.core import Callback
from fastai.vision.learner import vision_learner
from ssd_fastai.shapes import make_shapes
from ssd_fastai.data import detection_dls, multi_label_dls
from ssd_fastai.learner import ssd_learner
from conftest import quiet

@pytest.fixture(scope='module')
def shapes(tmp_path_factory): return make_shapes(tmp_path_factory.mktemp('s')/'s', n=24, size=48)

def _learner(shapes, **kwargs):
    return ssd_learner(quiet(detection_dls, shapes, size=48, bs=8, num_workers=0), arch='resnet10t', strides=(16,32), **kwargs)

def _trainable(model): return {n for n,p in model.named_parameters() if p.requires_grad}

def test_pretrained_weights_loaded_and_frozen(shapes, offline_hub):
    learn = _learner(shapes, pretrained=True)
    body = learn.model.body.model
    torch.testing.assert_close(body.conv1[0].weight, offline_hub['conv1.0.weight'])
    frozen = {n for n,p in body.named_parameters() if not p.requires_grad}
    bn = {n for n,m in body.named_modules() if isinstance(m, nn.BatchNorm2d) for n in (f'{n}.weight', f'{n}.bias')}
    assert frozen and frozen == {n for n,_ in body.named_parameters()} - bn        # every body weight but the BatchNorms'
    assert all(p.requires_grad for p in learn.model.head.parameters())
    learn.unfreeze()
    assert all(p.requires_grad for p in learn.model.parameters())
    assert all(p.requires_grad for p in _learner(shapes, pretrained=False).model.parameters())   # from scratch: nothing frozen

def test_frozen_like_fastai_vision_learner(shapes, offline_hub):
    "The body parameters a frozen `ssd_learner` trains are those fastai's frozen `vision_learner` trains in the same timm body."
    ours = _learner(shapes, pretrained=True)
    theirs = vision_learner(quiet(multi_label_dls, shapes, size=48, bs=8, num_workers=0), 'resnet10t', pretrained=True)
    assert theirs.model[0].model.conv1[0].weight.requires_grad is False
    names = lambda m: {n for n,p in m.named_parameters() if p.requires_grad}
    assert names(ours.model.body.model) == names(theirs.model[0].model)

class _Record(Callback):
    "The learning rate of each parameter group, and whether the body's first convolution changed, during a fit."
    def before_fit(self): self.lrs,self.w0 = [],self.learn.model.body.model.conv1[0].weight.detach().clone()
    def after_batch(self): self.lrs.append([h['lr'] for h in self.opt.hypers])
    def after_fit(self): self.moved = not torch.equal(self.w0, self.learn.model.body.model.conv1[0].weight)

def test_discriminative_lrs_and_fine_tune(shapes, offline_hub):
    learn, rec = _learner(shapes, pretrained=True), _Record()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=rec)
    assert not rec.moved                                                   # frozen: the body's weights stay
    running = learn.model.body.model.bn1.running_mean.clone()
    learn.unfreeze()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, slice(1e-5, 1e-3), cbs=rec)
    assert rec.moved and rec.lrs[0] == pytest.approx([1e-5, 1e-3])       # body, head
    assert not torch.equal(running, learn.model.body.model.bn1.running_mean)
    learn = _learner(shapes, pretrained=True)
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(1, 2e-3, freeze_epochs=1)
    assert len(learn.recorder.values) == 1 and all(p.requires_grad for p in learn.model.parameters())

def test_lr_find_leaves_the_model(shapes, offline_hub):
    learn = _learner(shapes, pretrained=True)
    before = {k: v.clone() for k,v in learn.model.state_dict().items()}
    with learn.no_bar(), learn.no_logging(): sug = learn.lr_find(num_it=8, show_plot=False)
    assert sug.valley > 0
    for k,v in learn.model.state_dict().items(): torch.testing.assert_close(v, before[k], msg=k)
