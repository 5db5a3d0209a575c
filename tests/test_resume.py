"""Never lose work: `ssd-fastai train` killed mid-run and resumed, and `export` failing half-way."""
import json, signal, subprocess, sys, time, warnings
from pathlib import Path
import pytest, torch
import matplotlib
matplotlib.use('Agg')
from fastai.learner import load_learner
from conftest import cli

ARGS = ['train', '--n-images', '48', '--size', '64', '--bs', '8', '--epochs', '3']

def _cmd(out, *extra): return cli(*ARGS, '--out', out, *extra)

def _run(out, *extra, timeout=400):
    r = subprocess.run(_cmd(out, *extra), capture_output=True, text=True, timeout=timeout)
    assert r.returncode==0, r.stderr[-3000:]
    return json.loads((Path(out)/'metrics.json').read_text())

def _epochs_done(out):
    try: return json.loads((Path(out)/'checkpoint.json').read_text())['epoch']
    except (FileNotFoundError, json.JSONDecodeError, KeyError): return 0

def _load(f):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return load_learner(f)

@pytest.mark.slow
def test_kill_and_resume(tmp_path):
    """Kill `ssd-fastai train` (SIGKILL) once its first checkpoint is written, then `--resume`: it finishes with the same
    metrics, epoch by epoch, as an uninterrupted run of the same command, and its `ssd.pkl` makes the same predictions.
    (The checkpoint holds the weights, the optimiser, the random state and the smoothed training loss.)"""
    d = tmp_path/'killed'
    p = subprocess.Popen(_cmd(d), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while _epochs_done(d)<1 and p.poll() is None and time.time()-t0<400: time.sleep(0.05)
        assert p.poll() is None, f"the run ended before it could be killed: {p.stderr.read()[-2000:]}"
        killed_at = _epochs_done(d)
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode==-signal.SIGKILL and 1<=killed_at<3
    assert not (d/'ssd.pkl').exists() and not (d/'metrics.json').exists()
    json.loads((d/'checkpoint.json').read_text())          # what was written is whole: atomic writes

    resumed = _run(d, '--resume')
    straight = _run(tmp_path/'straight')
    assert [h['epoch'] for h in resumed['history']]==[h['epoch'] for h in straight['history']]==[0, 1, 2]
    for h0,h1 in zip(resumed['history'], straight['history']):
        assert h0.keys()==h1.keys()
        for k in h0: assert h0[k]==pytest.approx(h1[k], rel=1e-5, abs=1e-6), (h0['epoch'], k)
    assert resumed['final']==pytest.approx(straight['final'], rel=1e-5, abs=1e-6)
    assert resumed['settings']==straight['settings'] and resumed['n_train']==straight['n_train']
    l0,l1 = _load(d/'ssd.pkl'),_load(tmp_path/'straight'/'ssd.pkl')
    assert l0.dls.vocab==l1.dls.vocab==['#na#', *resumed['vocab']]
    for a,b in zip(l0.model.state_dict().values(), l1.model.state_dict().values()): torch.testing.assert_close(a, b)

def test_resume_with_other_settings(tmp_path):
    "`--resume` with settings other than the checkpoint's: one-line error naming the checkpoint, exit 2."
    _run(tmp_path, '--epochs', '1')
    r = subprocess.run(_cmd(tmp_path, '--resume', '--lr', '0.01'), capture_output=True, text=True, timeout=300)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode==2 and 'checkpoint.pth was made with other settings' in last and 'Traceback' not in r.stderr, r.stderr[-2000:]

def test_resume_without_checkpoint(tmp_path):
    "`--resume` where nothing was saved: one-line error, exit 2, no training."
    r = subprocess.run(_cmd(tmp_path/'empty', '--resume'), capture_output=True, text=True, timeout=300)
    assert r.returncode==2 and 'no checkpoint in' in r.stderr.strip().splitlines()[-1] and 'Traceback' not in r.stderr

# ---------------------------------------------------------------- export is atomic

@pytest.fixture
def unfitted_learner(tmp_path):
    from ssd_fastai.shapes import make_shapes
    from ssd_fastai.data import detection_dls
    from ssd_fastai.learner import ssd_learner
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dls = detection_dls(make_shapes(tmp_path/'s', n=8, size=48), size=48, bs=4, num_workers=0)
    return ssd_learner(dls, arch='resnet10t', pretrained=False, path=tmp_path)

@pytest.mark.parametrize('exc', [OSError(28, 'No space left on device'), KeyboardInterrupt()])
def test_export_is_atomic(unfitted_learner, tmp_path, monkeypatch, exc):
    "A failure or an interruption in the middle of `export` leaves the previous `ssd.pkl` whole and loadable, and no temporary file."
    learn = unfitted_learner
    learn.export('ssd.pkl')
    before = (tmp_path/'ssd.pkl').read_bytes()
    real_save = torch.save
    def failing_save(obj, f, *args, **kwargs):
        with open(f, 'wb') as fh: fh.write(b'\x80\x02partial pickle')
        raise exc
    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(type(exc)): learn.export('ssd.pkl')
    monkeypatch.setattr(torch, 'save', real_save)
    assert (tmp_path/'ssd.pkl').read_bytes()==before
    assert not list(tmp_path.glob('.*tmp*'))
    assert _load(tmp_path/'ssd.pkl').dls.vocab==learn.dls.vocab
    learn.export('ssd.pkl')                               # and the next export still works
    assert _load(tmp_path/'ssd.pkl').dls.vocab==learn.dls.vocab
