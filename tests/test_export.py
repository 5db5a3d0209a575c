"Export in one process, load and predict in a fresh one: same detections, with fastai and with TorchScript alone."
import json, subprocess, sys
import pytest, torch
from fastai.torch_core import set_seed
from ssd_fastai.shapes import make_shapes
from ssd_fastai.data import detection_dls
from ssd_fastai.inference import DetDecoder
from ssd_fastai.learner import ssd_learner


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('export')
    set_seed(0)
    path = make_shapes(tmp/'shapes', n=32, size=64)
    dls = detection_dls(path, size=64, bs=8, num_workers=0)
    learn = ssd_learner(dls, arch='resnet18', pretrained=False, path=tmp, strides=(16,32,64))
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 3e-3)
    learn.loss_func.decoder = DetDecoder(score_thresh=0.)   # keep plenty of detections to compare
    learn.export('ssd.pkl')
    return learn, sorted((path/'images').iterdir())[:3], tmp


def _run(code:str)->dict:
    "Run `code` in a fresh Python process; it prints one JSON line."
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_load_learner_in_fresh_process(trained):
    learn,imgs,tmp = trained
    res = _run(f"""
import json, warnings; warnings.filterwarnings('ignore')
from fastai.learner import load_learner
learn = load_learner({str(tmp/'ssd.pkl')!r})
print(json.dumps([[b.tolist(), list(l), s.tolist()] for b,l,s in learn.predict_batch({[str(i) for i in imgs]!r})]))
""")
    for (b,l,s),(b2,l2,s2) in zip(learn.predict_batch(imgs), res):
        assert len(l) > 0 and list(l) == l2
        torch.testing.assert_close(b, torch.tensor(b2), atol=1e-4, rtol=0)
        torch.testing.assert_close(s, torch.tensor(s2), atol=1e-5, rtol=0)


def test_torchscript_without_ssd_fastai(trained):
    learn,imgs,tmp = trained
    ts = learn.export_torchscript('ssd.pt')
    img = imgs[0]
    res = _run(f"""
import json, numpy as np, torch, torchvision
from PIL import Image
det = torch.jit.load({str(ts)!r})
x = torch.from_numpy(np.array(Image.open({str(img)!r}).convert('RGB'))).permute(2,0,1)[None].float()/255
b,l,s = det(x)
print(json.dumps([b[0].tolist(), l[0].tolist(), s[0].tolist()]))
""")
    b,l,s = learn.predict(img)
    k = len(l)
    vocab = list(learn.dls.vocab)
    assert [vocab[i] for i in res[1][:k]] == list(l)
    torch.testing.assert_close(torch.tensor(res[0][:k]), b, atol=1e-3, rtol=0)
    torch.testing.assert_close(torch.tensor(res[2][:k]), s, atol=1e-4, rtol=0)
