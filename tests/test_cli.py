"""`ssd-fastai` as a practitioner uses it: the run report and one log line per epoch, the dataset's splits in `train`
and `eval` (and `eval` refusing to score training images), fine-tuning a pretrained body in two resumable phases,
`predict` on folders and globs with COCO results."""
import contextlib, io, json, shutil
from pathlib import Path
import pandas as pd, pytest, torch
from ssd_fastai.shapes import make_shapes
from ssd_fastai.metrics import to_coco
from ssd_fastai.cli import main, train, evaluate, predict, CLIError
from conftest import write_voc, quiet

def _main(args):
    "Run `ssd-fastai ARGS` in this process; its stdout (a pipe, not a terminal)."
    out = io.StringIO()
    with contextlib.redirect_stdout(out): quiet(main, [str(a) for a in args])
    return out.getvalue()

SMALL = ['--size', 48, '--bs', 8, '--strides', 16, 32]

def test_train_report_and_log_lines(tmp_path):
    log = _main(['train', '--n-images', 32, '--epochs', 2, '--out', tmp_path, *SMALL])
    assert '\r' not in log and "has no validation split: a random 20%" in log
    head = next(i for i,l in enumerate(log.splitlines()) if l.split()[:3] == ['epoch', 'train_loss', 'valid_loss'])
    epochs = [l.split()[0] for l in log.splitlines()[head+1:head+3]]
    assert epochs == ['0', '1']
    res = pd.read_csv(tmp_path/'results.csv')
    assert list(res['epoch']) == [0, 1] and {'train_loss', 'valid_loss', 'clas_loss', 'loc_loss', 'mAP50', 'mAP', 'lr', 'time'} <= set(res.columns)
    for f in ('curves.png', 'pr_curve.png', 'confusion_matrix.png', 'per_class.csv', 'detections_coco.json', 'results.png', 'ssd.pkl'):
        assert (tmp_path/f).exists(), f
    tbl = pd.read_csv(tmp_path/'per_class.csv')
    assert 'AP50' in tbl and tbl['class'].iloc[-1] == 'all' and 'AP50' in log
    assert json.loads((tmp_path/'metrics.json').read_text())['settings']['lr'] == 3e-3   # the default from scratch

def test_pretrained_two_phases_and_resume(tmp_path, offline_hub):
    "`--pretrained`: a frozen phase then an unfrozen one, epochs numbered across both; resumed after the first, the same run."
    args = ['train', '--n-images', 32, '--arch', 'resnet10t', '--pretrained', '--freeze-epochs', 1, '--epochs', 1, *SMALL]
    _main([*args, '--out', tmp_path/'straight'])
    s = tmp_path/'straight'
    assert json.loads((s/'checkpoint_frozen.json').read_text())['epoch'] == 1 and json.loads((s/'checkpoint.json').read_text())['epoch'] == 1
    assert list(pd.read_csv(s/'results.csv')['epoch']) == [0, 1]
    r = tmp_path/'resumed'
    shutil.copytree(s, r)
    for f in ('checkpoint.pth', 'checkpoint.json', 'best.pth', 'ssd.pkl', 'metrics.json'): (r/f).unlink()   # killed after the first phase
    _main([*args, '--out', r, '--resume'])
    m0,m1 = (json.loads((d/'metrics.json').read_text()) for d in (s, r))
    assert m0['settings']['lr'] == m1['settings']['lr'] == 1e-3            # the default for a pretrained body
    assert [h['epoch'] for h in m1['history']] == [0, 0]                  # one epoch in each phase
    assert m1['final'] == pytest.approx(m0['final'], rel=1e-5, abs=1e-6)

@pytest.fixture(scope='module')
def voc_run(tmp_path_factory):
    "A small VOC folder with train/val/test lists, and a model trained on its 'train' split."
    d = tmp_path_factory.mktemp('voc')
    objs = {f'{i}': [('cat' if i%2 else 'dog', (4+i, 4, 30+i, 28))] for i in range(12)}
    voc = write_voc(d/'voc', objs, size=(48, 48), splits={'train': [str(i) for i in range(8)], 'val': ['8', '9'], 'test': ['10', '11']})
    quiet(train, str(voc), out=d/'run', epochs=1, size=48, bs=4, strides=(16, 32))
    return voc, d/'run'/'ssd.pkl'

def test_eval_scores_the_val_split(voc_run, tmp_path):
    voc, model = voc_run
    res = quiet(evaluate, model, data=voc, out=tmp_path/'ev')
    assert res['scored'].startswith("split 'val'") and res['n_images'] == 2 and res['seen'] == 0
    assert (tmp_path/'ev'/'per_class.csv').exists() and (tmp_path/'ev'/'confusion_matrix.png').exists()
    assert quiet(evaluate, model, data=voc, split='test', out=tmp_path/'t')['n_images'] == 2

def test_eval_refuses_training_images(voc_run, tmp_path):
    voc, model = voc_run
    with pytest.raises(CLIError, match=r"8 of the 8 images of split 'train' .* were used to train this model"):
        quiet(evaluate, model, data=voc, split='train', out=tmp_path/'e')
    assert quiet(evaluate, model, data=voc, split='train', allow_seen=True, out=tmp_path/'e')['seen'] == 8

def test_predict_folders_globs_and_coco_json(tiny_learner, tmp_path):
    from pycocotools.coco import COCO
    tiny_learner.export(tmp_path/'m.pkl')
    imgs = make_shapes(tmp_path/'s', n=5, size=48)/'images'
    res = quiet(predict, tmp_path/'m.pkl', [imgs, imgs/'0000[01].png'], out=tmp_path/'p', score_thresh=0.5, save_json=True)
    assert [Path(r['image']).name for r in res] == [f'0000{i}.png' for i in range(5)] + ['00000.png', '00001.png']
    dets = json.loads((tmp_path/'p'/'predictions_coco.json').read_text())
    assert len(dets) == sum(len(r['labels']) for r in res)
    gt = COCO(); gt.dataset = to_coco([dict(boxes=[], labels=[])]*len(res), tiny_learner.dls.vocab); gt.createIndex()
    if dets: assert len(gt.loadRes(dets).getAnnIds()) == len(dets)      # pycocotools reads it
    with pytest.raises(CLIError, match='no image in'): predict(tmp_path/'m.pkl', [str(imgs/'*.jpg')], out=tmp_path/'q')

def test_warnings_are_one_line_of_output(tmp_path, capsys):
    "A class only in the validation split: `train` warns with one `warning:` line naming it, not a Python source line."
    objs = {f'a{i}': [('cat', (5, 5, 40, 30))] for i in range(6)} | {'b0': [('cat', (5, 5, 40, 30)), ('dog', (2, 2, 20, 20))]}
    write_voc(tmp_path/'voc', objs, splits={'train': [f'a{i}' for i in range(4)], 'val': ['a4', 'a5', 'b0']})
    with contextlib.redirect_stdout(io.StringIO()):
        main(['train', '--data', str(tmp_path/'voc'), '--epochs', '1', '--out', str(tmp_path/'run'), *map(str, SMALL)])
    err = capsys.readouterr().err
    assert 'warning: ' in err and 'dog' in err and '.py:' not in err
