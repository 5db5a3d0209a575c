"Shapes, anchors, gradients and weight loading of the models in `ssd_fastai.model` (pretrained=False: no network)."
import os, subprocess, sys, warnings
import math
import pytest, torch, timm
from torch import nn
from ssd_fastai.anchors import anchor_boxes, anchor_sizes, grid_centres, SSD_ZOOMS
from ssd_fastai.model import *

warnings.filterwarnings('ignore', category=FutureWarning)
ARCHS = ['resnet18', 'efficientnet_b0', 'mobilenetv3_small_050', 'convnext_atto']
SIZES = [(128, 128), (160, 224), (96, 200)]

def _half(hw):
    "Grid after a stride-2 3x3 conv with padding 1: each side rounds up."
    return tuple(-(-n//2) for n in hw)

@pytest.fixture(scope='module', params=ARCHS)
def model(request): return ssd_model(request.param, n_cls=5, pretrained=False, nf=32).eval()

@pytest.mark.parametrize('sz', SIZES)
def test_shapes_and_anchors(model, sz):
    "The default levels: the body's stride-16 and stride-32 maps and two stride-2 convolutions; anchors 2-3.2 cells wide, cut to the image."
    x = torch.randn(2, 3, *sz)
    with torch.no_grad(): clas, box, anc = model(x); feats = model.body(x)
    s16, s32 = (tuple(feats[model.body.reductions.index(s)].shape[-2:]) for s in (16, 32))
    grids = [s16, s32, _half(s32), _half(_half(s32))]
    assert model.grids == grids
    A = sum(h*w for h,w in grids)*9
    assert clas.shape == (2, A, 5) and box.shape == (2, A, 4) and anc.shape == (2, A, 4)
    assert torch.equal(anc[1], anchor_boxes(grids, zooms=SSD_ZOOMS, clip=True))   # clipped to the image by default

def test_anchors_cached_and_recomputed():
    m = ssd_model('resnet18', n_cls=2, pretrained=False, nf=16).eval()
    with torch.no_grad():
        a1 = m(torch.randn(1, 3, 128, 128))[2]
        a2 = m(torch.randn(3, 3, 128, 128))[2]
        assert a1.data_ptr() == a2.data_ptr()          # same buffer, no recomputation
        a3 = m(torch.randn(1, 3, 224, 160))[2]
    assert a3.shape[1] != a1.shape[1] and a3.shape[1] == m.anchors.shape[0]
    assert 'anchors' not in m.state_dict()
    m2 = ssd_model('resnet18', n_cls=2, pretrained=False, nf=16)
    m2.load_state_dict(m.state_dict())                 # loads whatever size the anchors were made for

def test_fpn_and_strides():
    m = ssd_model('resnet18', n_cls=3, pretrained=False, strides=(8,16,32), fpn=True, nf=32).eval()
    with torch.no_grad(): clas, box, anc = m(torch.randn(2, 3, 128, 96))
    assert m.grids == [(16,12), (8,6), (4,3)]
    assert anc.shape[1] == clas.shape[1] == (16*12+8*6+4*3)*9
    m = ssd_model('resnet18', n_cls=3, pretrained=False, strides=(16,64), nf=32).eval()   # no fpn, a gap
    with torch.no_grad(): clas, box, anc = m(torch.randn(2, 3, 128, 128))
    assert m.grids == [(8,8), (2,2)] and anc.shape[1] == clas.shape[1] == (64+4)*9
    for bad in [(12, 32), (32, 96)]:
        with pytest.raises(ValueError): ssd_model('resnet18', pretrained=False, strides=bad)

def test_other_zooms_ratios():
    zooms, ratios = (1., 2.), ((1., 1.), (2., 1.))
    m = ssd_model('resnet18', n_cls=3, pretrained=False, zooms=zooms, ratios=ratios, nf=16).eval()
    with torch.no_grad(): clas, box, anc = m(torch.randn(2, 3, 128, 128))
    assert anc.shape[1] == clas.shape[1] == (64+16+4+1)*4

def test_outconv_order_matches_anchors():
    "Wire an OutConv so its outputs *are* the anchors: class logits = cell centre, box = anchor size."
    h, w, zooms, ratios = 3, 5, (0.5, 1.), ((1., 1.), (2., 1.), (1., 2.))
    k = len(zooms)*len(ratios)
    oc = OutConv(2, k, n_cls=2)
    with torch.no_grad():
        for conv in (oc.clas, oc.box): conv.weight.zero_(); conv.bias.zero_()
        for j in range(k): oc.clas.weight[2*j, 0, 1, 1] = 1; oc.clas.weight[2*j+1, 1, 1, 1] = 1
        oc.box.bias.copy_(torch.cat([torch.cat([torch.zeros(2), s]) for s in anchor_sizes(h, w, zooms, ratios)]))
        x = grid_centres(h, w).T.reshape(1, 2, h, w)
        clas, box = oc(x)
    anc = anchor_boxes([(h, w)], zooms, ratios)
    torch.testing.assert_close(clas[0], anc[:, :2])
    torch.testing.assert_close(box[0, :, 2:], anc[:, 2:])

def test_gradients_reach_body():
    m = ssd_model('resnet18', n_cls=3, pretrained=False, nf=16)
    clas, box, anc = m(torch.randn(2, 3, 128, 128))
    (clas.sigmoid().sum() + box.abs().sum()).backward()
    g = m.body.model.conv1.weight.grad
    assert g is not None and g.abs().sum() > 0
    assert all(p.grad is not None for p in m.head.parameters())

def test_largest_object_model():
    m = largest_object_model('efficientnet_b0', n_cls=7, pretrained=False)
    for sz in SIZES: assert m(torch.randn(2, 3, *sz)).shape == (2, 11)
    out = m(torch.randn(2, 3, 128, 128)); out.sum().backward()
    assert m.body.model.conv_stem.weight.grad.abs().sum() > 0
    assert len(body_head_split(m)) == 2

def test_local_weights(tmp_path):
    torch.manual_seed(1)
    full = timm.create_model('efficientnet_b0', pretrained=False)
    torch.save({'state_dict': full.state_dict()}, tmp_path/'full.pth')
    m = ssd_model('efficientnet_b0', n_cls=2, weights=tmp_path/'full.pth')
    assert torch.equal(m.body.model.conv_stem.weight, full.conv_stem.weight)
    torch.save(m.body.model.state_dict(), tmp_path/'feats.pth')
    b = TimmFeatures('efficientnet_b0', weights=tmp_path/'feats.pth')
    assert torch.equal(b.model.blocks[6][0].conv_pwl.weight, full.blocks[6][0].conv_pwl.weight)
    with pytest.raises(ValueError, match='do not fit'): TimmFeatures('resnet18', weights=tmp_path/'full.pth')
    with pytest.raises(FileNotFoundError): TimmFeatures('resnet18', weights=tmp_path/'nope.pth')
    with pytest.raises(ValueError, match='unknown timm'): TimmFeatures('not_a_model', pretrained=False)

def test_clear_error_without_network(monkeypatch):
    import timm.models._builder as builder
    def no_net(*args, **kwargs): raise OSError('Name or service not known')
    monkeypatch.setattr(builder, 'load_pretrained', no_net)
    with pytest.raises(RuntimeError, match=r'pretrained=False.*weights=PATH'): ssd_model('resnet18', pretrained=True)

def test_clear_error_offline_hub(tmp_path):
    "In a fresh process with the hub offline and an empty cache, the error says what to do."
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path), TORCH_HOME=str(tmp_path))
    code = "from ssd_fastai.model import TimmFeatures\ntry: TimmFeatures('resnet18', pretrained=True)\nexcept RuntimeError as e: print(e)"
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120).stdout
    assert 'pretrained=False' in out and 'weights=PATH' in out

def test_split_and_stats():
    m = ssd_model('convnext_atto', n_cls=2, pretrained=False, nf=16)
    body, head = body_head_split(m)
    assert len(body) == len(list(m.body.parameters())) and len(head) == len(list(m.head.parameters()))
    assert len(m.body.mean) == 3 and len(m.body.std) == 3


@pytest.mark.parametrize('strides', [(16,32,64,128), (8,16,32,64), (32,64,128), (64,)])
def test_head_with_and_without_adapting_convs(strides):
    "The lesson's adapting `StdConv`s (`adapt=True`) change the layers, not the grids, outputs or anchors."
    x = torch.randn(2, 3, 128, 128)
    outs = {}
    for adapt in (False, True):
        m = ssd_model('resnet18', n_cls=3, pretrained=False, strides=strides, adapt=adapt, nf=32).eval()
        assert (m.head.adapt is not None) == adapt
        outs[adapt] = m(x)
    for a,b in zip(outs[False], outs[True]): assert a.shape == b.shape
    torch.testing.assert_close(outs[False][2], outs[True][2])

class _Scaled(nn.Module):
    "A body whose feature maps are rescaled to a std of `std` (a pretrained body's on real photos: 3 to 9), or left as they are."
    def __init__(self, body, std): super().__init__(); self.body,self.std = body,std
    def forward(self, x): return [f*(self.std/f.std()) if self.std else f for f in self.body(x)]

def _start_losses(arch, std, norm=True, seed=0):
    "The SSD loss of a fresh model (in training mode) on one random batch, and the loss of predictions at the prior (logits at the prior, boxes at the anchors)."
    from ssd_fastai.loss import SSDLoss
    torch.manual_seed(seed)
    m = ssd_model(arch, n_cls=5, pretrained=False, norm=norm).train()
    m.body = _Scaled(m.body, std)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, 128, 128, generator=g)
    c = torch.rand(4, 6, 2, generator=g)*1.4-0.7; wh = torch.rand(4, 6, 2, generator=g)*0.6+0.1
    bb, lbl = torch.cat([c-wh/2, c+wh/2], -1).clamp(-1, 1), torch.randint(0, 6, (4, 6), generator=g)
    lf = SSDLoss()
    with torch.no_grad():
        clas, box, anc = m(x)
        return lf((clas, box, anc), bb, lbl).item(), lf((torch.full_like(clas, -math.log(99)), torch.zeros_like(box), anc), bb, lbl).item()

@pytest.mark.parametrize('arch', ['resnet10t', 'efficientnet_b0', 'convnext_atto', 'mobilenetv3_small_050'])
@pytest.mark.parametrize('std', [None, 5.])
def test_initial_loss_at_the_prior(arch, std):
    "Before any step, the loss is within 10% of its value at the prior, for several families, from scratch and at a pretrained body's scale."
    loss, prior = _start_losses(arch, std)
    assert abs(loss - prior) < 0.1*prior, (loss, prior)

def test_initial_loss_without_l2norm():
    "Without `L2Norm` the same start is far from the prior at a pretrained body's feature scale: what the normalisation is there for."
    loss, prior = _start_losses('efficientnet_b0', 5., norm=False)
    assert loss > 1.5*prior, (loss, prior)   # about twice the prior loss
