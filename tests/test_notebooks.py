"""The notebooks are committed with the outputs of their last run (`python tools/run_nbs.py`), as GitHub and the docs
site show them: every notebook but the index has a run record that matches its code, keeps every output its cells
left, holds no path of the machine it ran on and only downsized images.

The runner and the checker are tested on small notebooks in a temporary folder: what runs and what does not, what
the written notebook holds, what it refuses to write, and that the checker fails on a stale or never-run notebook."""
import base64, io, json, shutil, subprocess, sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT/'tools'/'run_nbs.py'
sys.path.insert(0, str(ROOT/'tools'))
from run_nbs import MAX_WIDTH, RECORD_KEY, check_nb, default_nbs

@pytest.mark.parametrize('nb', default_nbs(), ids=lambda p: p.relative_to(ROOT/'nbs').as_posix())
def test_notebook_holds_the_outputs_of_its_code(nb):
    probs = check_nb(nb)
    assert not probs, f'{nb.relative_to(ROOT)}:\n' + '\n'.join(probs)

# ---------------------------------------------------------------------------------------------------------------
# Small notebooks

def _cell(src, kind='code'):
    _cell.n += 1
    c = {'cell_type': kind, 'id': f'{_cell.n:08x}', 'metadata': {}, 'source': src}
    if kind=='code': c.update(execution_count=None, outputs=[])
    return c
_cell.n = 0

def _nb(*cells):
    return {'cells': [_cell(c) if isinstance(c, str) else c for c in cells], 'metadata': {'kernelspec':
            {'display_name': 'python3', 'language': 'python', 'name': 'python3'}}, 'nbformat': 4, 'nbformat_minor': 5}

GOOD = _nb(_cell('# A small notebook', 'markdown'),
           'import matplotlib.pyplot as plt\nfrom pathlib import Path',
           "print('hello')",
           "#| slow\nprint('the slow cell ran')",
           "#| eval: false\nprint('the eval-false cell ran')",
           "#| cuda\nprint('the cuda cell ran')",
           'fig,ax = plt.subplots(figsize=(20, 2), dpi=100)\nax.plot(range(10))\nplt.show()',
           "from PIL import Image\nImage.linear_gradient('L').resize((2000, 200)).convert('RGB')",
           "for i in range(3): print(f'\\rstep {i}', end='')\nprint()",
           'print(Path.cwd().name)',
           'class A: pass\nA()')

BAD = {'skips':  _nb("print('Skipped: Pascal VOC not found (set SSD_FASTAI_DATA); using the synthetic shapes instead')"),
       'paths':  _nb('from pathlib import Path', 'print(Path.cwd())'),
       'broken': _nb("print('before')", '1/0')}

def _write(path, nb): path.write_text(json.dumps(nb, indent=1), encoding='utf-8')
def _read(path): return json.loads(path.read_text(encoding='utf-8'))
def _run(*args): return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600)
def _src(cell): return ''.join(cell['source'])
def _texts(cell): return ''.join(t for o in cell['outputs'] for t in o.get('text', []) + o.get('data', {}).get('text/plain', []))

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "The small notebooks, after one run of the tool over all of them (so the good one was run beside the others)"
    d = tmp_path_factory.mktemp('small_nbs')
    _write(d/'good.ipynb', GOOD)
    for k,nb in BAD.items(): _write(d/f'{k}.ipynb', nb)
    r = _run(*sorted(d.glob('*.ipynb')), '--n-workers', '2')
    return d, r

def test_good_notebook_written(runs):
    d,r = runs
    assert r.returncode==1, 'three notebooks must be refused'
    assert 'ok' in r.stdout and 'good.ipynb' in r.stdout, r.stdout
    cells = [c for c in _read(d/'good.ipynb')['cells'] if c['cell_type']=='code']
    out = {_src(c).splitlines()[-1]: c for c in cells}
    assert 'hello' in _texts(out["print('hello')"])
    assert 'the slow cell ran' in _texts(out["print('the slow cell ran')"]),  '#| slow cells hold the real runs: they run'
    assert not out["print('the eval-false cell ran')"]['outputs'],            '#| eval: false cells do not run'
    assert not out["print('the cuda cell ran')"]['outputs'],                  '#| cuda cells do not run by default'
    assert _texts(out['print()']) == 'step 2\n',                              'streams are kept as a terminal shows them'
    assert _texts(out['print(Path.cwd().name)']) == f'{d.name}\n',            'a notebook runs in its own folder'
    assert _texts(out['A()']) == '<__main__.A>',                              "nbdev-clean's ids are removed from reprs"
    assert all(c['execution_count'] is None for c in cells)

def _image(cell):
    png, = [base64.b64decode(o['data']['image/png']) for o in cell['outputs'] if 'image/png' in o.get('data', {})]
    return Image.open(io.BytesIO(png))

def test_images_downsized(runs):
    "Images are scaled down to MAX_WIDTH pixels, plots stored with a palette"
    cells = _read(runs[0]/'good.ipynb')['cells']
    im = _image(next(c for c in cells if 'resize((2000, 200))' in _src(c)))
    assert im.size==(MAX_WIDTH, round(200*MAX_WIDTH/2000)), im.size
    plot = _image(next(c for c in cells if 'plt.show()' in _src(c)))
    assert plot.width==MAX_WIDTH and plot.mode=='P', (plot.size, plot.mode)

def test_written_notebook_is_clean(runs, tmp_path):
    "nbdev-clean leaves the written notebook as it is: outputs and run record included"
    d,_ = runs
    f = tmp_path/'good.ipynb'
    shutil.copy(d/'good.ipynb', f)
    subprocess.run([Path(sys.executable).parent/'nbdev-clean', '--fname', f], check=True, cwd=ROOT, capture_output=True)
    assert f.read_bytes()==(d/'good.ipynb').read_bytes()
    nb = _read(f)
    assert RECORD_KEY in nb['metadata'] and any(c.get('outputs') for c in nb['cells'])

def test_refusals(runs):
    "A fallback run, an output with a path of the machine and a failed run are not written, and the error says where"
    d,r = runs
    for k,nb in BAD.items():
        assert _read(d/f'{k}.ipynb')==nb, f'{k}.ipynb was written'
    err = r.stderr
    assert 'skips.ipynb: not written' in err and "'Skipped:'" in err and f'id {BAD["skips"]["cells"][0]["id"]}' in err
    assert 'paths.ipynb: not written' in err and 'paths of this machine' in err and f'id {BAD["paths"]["cells"][1]["id"]}' in err
    assert 'broken.ipynb: the run failed' in err and 'ZeroDivisionError' in err

def test_allow_skips(runs, tmp_path):
    d,_ = runs
    f = tmp_path/'skips.ipynb'
    shutil.copy(d/'skips.ipynb', f)
    r = _run(f, '--allow-skips')
    assert r.returncode==0, r.stderr
    nb = _read(f)
    assert 'Skipped: Pascal VOC' in _texts(nb['cells'][0])
    assert nb['metadata'][RECORD_KEY]['skipped']==[nb['cells'][0]['id']]

# ---------------------------------------------------------------------------------------------------------------
# The checker

def _variant(runs, tmp_path, name, change):
    "A copy of the good notebook, after its run, changed by `change`"
    nb = _read(runs[0]/'good.ipynb')
    change(nb)
    _write(tmp_path/f'{name}.ipynb', nb)
    return tmp_path/f'{name}.ipynb'

def _code(nb, i): return [c for c in nb['cells'] if c['cell_type']=='code'][i]

def test_check_good(runs):
    assert check_nb(runs[0]/'good.ipynb')==[]

def test_check_never_run(tmp_path):
    _write(tmp_path/'never.ipynb', GOOD)
    probs = check_nb(tmp_path/'never.ipynb')
    assert probs and 'never run' in probs[0]

@pytest.mark.parametrize('name,change,msg', [
    ('edited',   lambda nb: _code(nb, 1).update(source="print('hello, world')"),  'was edited after the last run'),
    ('added',    lambda nb: nb['cells'].append(_cell('print(3)')),                 'was added after the last run'),
    ('removed',  lambda nb: nb['cells'].remove(_code(nb, 1)),                       'were removed after the last run'),
    ('reordered',lambda nb: nb['cells'].insert(1, nb['cells'].pop(2)),             'were reordered after the last run'),
    ('stripped', lambda nb: _code(nb, 1).update(outputs=[]),                        'left 1 output(s) when it ran, and holds 0'),
    ('path',     lambda nb: _code(nb, 1)['outputs'][0].update(text=['/home/someone/data\n']), "machine path in cell 2"),
])
def test_check_fails(runs, tmp_path, name, change, msg):
    probs = check_nb(_variant(runs, tmp_path, name, change))
    assert any(msg in p for p in probs), probs
    assert 'run `python tools/run_nbs.py' in probs[-1]

def test_check_large_image(runs, tmp_path):
    buf = io.BytesIO()
    Image.new('RGB', (MAX_WIDTH+1, 10), 'white').save(buf, 'PNG')
    def _big(nb):
        cell = next(c for c in nb['cells'] if 'plt.show()' in _src(c))
        next(o for o in cell['outputs'] if 'image/png' in o.get('data', {}))['data']['image/png'] = base64.b64encode(buf.getvalue()).decode()
    probs = check_nb(_variant(runs, tmp_path, 'big', _big))
    assert any(f'{MAX_WIDTH+1} px wide' in p for p in probs), probs

def test_check_command(runs, tmp_path):
    "`run_nbs.py --check` fails when one of its notebooks is stale, and names it"
    d,_ = runs
    stale = _variant(runs, tmp_path, 'edited', lambda nb: _code(nb, 1).update(source="print('hi')"))
    r = _run('--check', d/'good.ipynb', stale)
    assert r.returncode==1 and 'edited.ipynb' in r.stderr and 'good.ipynb' not in r.stderr, r.stderr
    assert _run('--check', d/'good.ipynb').returncode==0
