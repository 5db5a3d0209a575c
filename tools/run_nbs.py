#!/usr/bin/env python
"""Run the notebooks top to bottom and store their outputs, so that GitHub and the docs site show them.

    python tools/run_nbs.py                     # every notebook but the index, 2 at a time
    python tools/run_nbs.py nbs/00_boxes.ipynb  # some notebooks
    python tools/run_nbs.py --check             # exit 1 if a notebook lacks the outputs of its code (tests/test_notebooks.py)

Each notebook runs in a fresh Python process with a new IPython shell (execnb's `CaptureShell`, the shell
`nbdev-test` uses), in the notebook's folder, every code cell in order: `#| slow` cells too, since they hold the
real runs, but not `#| eval: false` cells nor cells flagged with one of `--skip-flags` (default: `cuda`).
`nbdev-test` does not write outputs back; this does, and only when the whole notebook ran. Before writing it
- shows stream outputs as a terminal does (progress bars redrawn with `\\r` keep their last state);
- downsizes images: at most `MAX_WIDTH` pixels wide, PNGs re-encoded with a 256-colour palette;
- applies nbdev's own cleaning (`nbdev-clean` later changes nothing) with the project's `[tool.nbdev]` settings;
- records, in the notebook metadata key `nb_run` (kept by `nbdev-clean`, see `allowed_metadata_keys`), each code
  cell's id, a hash of its source and how many outputs it left: what `--check` compares the notebook with.
It refuses to write a notebook whose outputs hold a path of this machine (its home, temporary or system folders,
`site-packages`, its host name), naming the cell, and one that printed a line starting with `Skipped:` (a cell
that fell back because data or weights are missing: such a run must not replace the outputs of a real one) unless
`--allow-skips` is given.
"""
from __future__ import annotations
import argparse, base64, hashlib, io, json, os, re, socket, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # the library, as `nbdev-test` makes it importable

from fastcore.nbio import join_out, write_nb
from nbdev.config import get_config

RECORD_KEY      = 'nb_run'     # the notebook metadata key holding the run record
MAX_WIDTH       = 900          # px: images wider than this are scaled down (the page's text column is ~880 px)
MAX_IMAGE_BYTES = 400_000      # what `--check` allows one stored image to weigh
CELL_TIMEOUT    = 1800         # s: the default limit of one cell (the real training runs are in `#| slow` cells)
SKIP_FLAGS      = ('cuda',)    # cells with these flags do not run by default (no GPU where the docs are made)
MACHINE_PATHS   = ('/work/', '/root', '/home/', '/tmp/', '/usr/', '/Users/', '/var/folders/', 'site-packages')

# ---------------------------------------------------------------------------------------------------------------
# Outputs

def as_terminal(text:str) -> str:
    "What a terminal shows for `text`: a carriage return goes back to the start of its line, so progress bars keep their last state"
    lines = []
    for line in text.split('\n'):
        shown = ''
        for seg in line.split('\r'): shown = seg + shown[len(seg):]
        lines.append(shown.rstrip())
    return '\n'.join(lines)

def output_texts(o):
    "The texts an output shows: a stream's text, a traceback, every `text/*` (and JSON) representation; not images"
    if o.get('output_type')=='stream': yield join_out(o.get('text', ''))
    if o.get('output_type')=='error': yield '\n'.join(o.get('traceback', []))
    for mime,v in o.get('data', {}).items():
        if mime.startswith('image/') and mime!='image/svg+xml': continue
        yield join_out(v) if isinstance(v, (str, list)) else json.dumps(v)

def _palette(im):
    "`im` with at most 256 colours (transparency kept)"
    from PIL import Image
    if im.mode in ('RGBA','LA') and im.getchannel('A').getextrema()[0]==255: im = im.convert('RGB')
    if im.mode not in ('RGB','RGBA'): im = im.convert('RGBA' if 'A' in im.getbands() else 'RGB')
    return im.quantize(256, method=Image.Quantize.FASTOCTREE if im.mode=='RGBA' else Image.Quantize.MEDIANCUT)

def downsize_image(data:str, mime:str, max_width:int=MAX_WIDTH) -> str:
    "Base64 image `data` at most `max_width` pixels wide; a PNG re-encoded with a palette, if that is smaller"
    from PIL import Image
    im = Image.open(io.BytesIO(base64.b64decode(data)))
    if im.width > max_width: im = im.resize((max_width, max(1, round(im.height*max_width/im.width))), Image.LANCZOS)
    def _enc(img, **kw):
        buf = io.BytesIO()
        img.save(buf, **kw)
        return buf.getvalue()
    if mime=='image/jpeg': res = _enc(im.convert('RGB'), format='JPEG', quality=85, optimize=True)
    else: res = min(_enc(im, format='PNG', optimize=True), _enc(_palette(im), format='PNG', optimize=True), key=len)
    return base64.b64encode(res).decode() + '\n'

def tidy_outputs(cell, max_width:int=MAX_WIDTH):
    "Outputs of `cell` as a terminal would show its streams, with downsized images"
    outs = []
    for o in cell.get('outputs', []):
        if o.get('output_type')=='stream':
            o['text'] = as_terminal(join_out(o['text'])).splitlines(True)
            if not o['text']: continue
        for mime in ('image/png','image/jpeg'):
            if mime in o.get('data', {}): o['data'][mime] = downsize_image(join_out(o['data'][mime]), mime, max_width)
        outs.append(o)
    cell['outputs'] = outs

def image_sizes(o):
    "(mime, width, bytes) of each raster image of output `o`"
    from PIL import Image
    for mime in ('image/png','image/jpeg','image/gif'):
        if mime in o.get('data', {}):
            raw = base64.b64decode(join_out(o['data'][mime]))
            yield mime, Image.open(io.BytesIO(raw)).width, len(raw)

# ---------------------------------------------------------------------------------------------------------------
# Finding cells and what their outputs must not hold

def code_cells(nb) -> list[tuple[int, dict]]:
    "(index, cell) of each code cell of `nb`"
    return [(i,c) for i,c in enumerate(nb['cells']) if c['cell_type']=='code']

def cell_name(i:int, cell) -> str:
    "How messages name a cell: its index, its id and its first line of code"
    first = next((l for l in join_out(cell.get('source', '')).splitlines() if l.strip() and not l.startswith('#|')), '')
    return f'cell {i} (id {cell.get("id")}: {first[:60]!r})'

def machine_patterns() -> list[re.Pattern]:
    "What a path of this machine looks like in an output: its home, temporary and system folders, its host name"
    lits = {*MACHINE_PATHS, str(Path.home()), tempfile.gettempdir(), sys.prefix, str(ROOT)}
    pats = [re.compile(re.escape(o)) for o in sorted(lits) if len(o)>1]
    pats.append(re.compile(r'\b[A-Za-z]:\\Users\\'))
    host = socket.gethostname().split('.')[0]
    if host and host!='localhost': pats.append(re.compile(rf'(?<![\w-]){re.escape(host)}(?![\w-])'))
    return pats

_re_skipped = re.compile(r'^Skipped:')

def output_lines(cell):
    "(output index, line) of every line the outputs of `cell` show"
    for j,o in enumerate(cell.get('outputs', [])):
        for text in output_texts(o): yield from ((j,l) for l in text.splitlines())

def find_in_outputs(nb, pats) -> list[str]:
    "Where outputs of `nb` match one of `pats`: the cell, the output, what matched and the line"
    res = []
    for i,c in code_cells(nb):
        for j,line in output_lines(c):
            if found := [m.group(0) for p in pats if (m := p.search(line))]:
                res.append(f'{cell_name(i, c)}, output {j}: {", ".join(map(repr, found))} in {line.strip()[:160]!r}')
    return res

def skipped_cells(nb) -> list[str]:
    "Ids of the cells of `nb` that printed a line starting with `Skipped:`"
    return [c['id'] for _,c in code_cells(nb) if any(_re_skipped.match(l) for _,l in output_lines(c))]

# ---------------------------------------------------------------------------------------------------------------
# The run record

def src_hash(src) -> str: return hashlib.sha256(join_out(src).encode()).hexdigest()[:16]

def run_record(nb) -> dict:
    "What `check_nb` compares with: each code cell's `id source-hash number-of-outputs`, in order"
    res = {'code_cells': [f'{c["id"]} {src_hash(c["source"])} {len(c.get("outputs", []))}' for _,c in code_cells(nb)]}
    if skipped := skipped_cells(nb): res['skipped'] = skipped
    return res

def stale_cells(nb, rec:list) -> list[str]:
    "How the code cells of `nb` differ from those of its run record `rec`, [(id, hash, n_outputs)]"
    ids,hashes,cells = [o[0] for o in rec],{o[0]:o[1] for o in rec},code_cells(nb)
    res = [f'{cell_name(i, c)} was added after the last run' for i,c in cells if c['id'] not in hashes]
    res += [f'{cell_name(i, c)} was edited after the last run' for i,c in cells
            if c['id'] in hashes and hashes[c['id']]!=src_hash(c['source'])]
    if gone := [i for i in ids if i not in {c['id'] for _,c in cells}]: res.append(f'code cells {gone} were removed after the last run')
    if not res and ids!=[c['id'] for _,c in cells]: res.append('code cells were reordered after the last run')
    return [f'stale: {o}' for o in res]

def lost_outputs(nb, rec:list) -> list[str]:
    "Cells of `nb` that hold another number of outputs than they left in the run recorded in `rec`"
    recd,res = {i:(h,int(n)) for i,h,n in rec},[]
    for i,c in code_cells(nb):
        h,n = recd.get(c['id'], (None,0))
        if h==src_hash(c['source']) and len(c.get('outputs', []))!=n:  # edited cells are reported as stale
            res.append(f'{cell_name(i, c)} left {n} output(s) when it ran, and holds {len(c.get("outputs", []))}')
    return res

def large_images(nb, max_width:int=MAX_WIDTH, max_bytes:int=MAX_IMAGE_BYTES) -> list[str]:
    "Images in the outputs of `nb` wider than `max_width` pixels or heavier than `max_bytes`"
    return [f'{cell_name(i, c)}, output {j}: {mime} {w} px wide, {nbytes:,} bytes (at most {max_width} px, {max_bytes:,} bytes)'
            for i,c in code_cells(nb) for j,o in enumerate(c.get('outputs', [])) for mime,w,nbytes in image_sizes(o)
            if w>max_width or nbytes>max_bytes]

def check_nb(path, max_width:int=MAX_WIDTH, max_bytes:int=MAX_IMAGE_BYTES) -> list[str]:
    "What is wrong with the stored outputs of notebook `path`: no run record, cells changed since the run, missing outputs, machine paths, large images"
    path = Path(path)
    nb = json.loads(path.read_text(encoding='utf-8'))
    fix = f'run `python tools/run_nbs.py {_shown(path)}`'
    rec = nb.get('metadata', {}).get(RECORD_KEY) or {}
    if not isinstance(rec.get('code_cells'), list): return [f'never run with its outputs stored (no `{RECORD_KEY}` record): {fix}']
    rec = [o.split() for o in rec['code_cells']]
    res = (stale_cells(nb, rec) + lost_outputs(nb, rec) + [f'machine path in {o}' for o in find_in_outputs(nb, machine_patterns())]
           + large_images(nb, max_width, max_bytes))
    return res + ([fix] if res else [])

# ---------------------------------------------------------------------------------------------------------------
# Running

def _shown(p:Path) -> str:
    "`p` relative to the project, as messages show it"
    p = Path(p).resolve()
    return p.relative_to(ROOT).as_posix() if p.is_relative_to(ROOT) else p.name

def execute(src:Path, dst:Path, skip_flags=SKIP_FLAGS, cell_timeout:int|None=None):
    "Run notebook `src` top to bottom in a new shell of this process, in its folder, and write it with its outputs to `dst`"
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.process import NBProcessor
    from nbdev.test import _skip_cell
    src = Path(src).resolve()
    nb = NBProcessor(src, rm_directives=False, process=True).nb   # parses the directives, changes nothing
    shell = CaptureShell(src, mpl_format='png')
    with working_directory(src.parent):
        try: shell.run_all(nb, exc_stop=True, preproc=_skip_cell(nb, list(skip_flags)), cell_timeout=cell_timeout)
        except BaseException: sys.exit(shell.prettytb(fname=_shown(src)) or 'the run failed')
    write_nb(nb, dst)

def _config():
    "The project's nbdev settings, checked: `nbdev-clean` must keep outputs and the run record"
    cfg = get_config(ROOT)
    keys = cfg.get('allowed_metadata_keys') or []
    if cfg.clear_all or RECORD_KEY not in keys:
        sys.exit(f"{_shown(cfg.config_file)} [tool.nbdev]: set `clear_all = false` and add '{RECORD_KEY}' to "
                 "`allowed_metadata_keys`, or nbdev-clean removes the outputs or their run record")
    return cfg

def finish(nb, cfg, max_width:int=MAX_WIDTH):
    "Tidy the outputs of the executed notebook `nb`, record the run and clean it as `nbdev-clean` does"
    from nbdev.clean import clean_nb
    for _,c in code_cells(nb): tidy_outputs(c, max_width)
    clean_nb(nb, cfg.clear_all, cfg.get('allowed_metadata_keys'), cfg.get('allowed_cell_metadata_keys'), cfg.clean_ids,
             cfg.get('allowed_out_metadata_keys'))
    nb['metadata'][RECORD_KEY] = run_record(nb)
    return nb

def run_nb(src:Path, dst:Path|None=None, allow_skips:bool=False, skip_flags=SKIP_FLAGS, cell_timeout:int|None=CELL_TIMEOUT,
           max_width:int=MAX_WIDTH) -> str|None:
    "Run notebook `src` in a fresh process and write it with its outputs to `dst` (default: `src`); return why not, or None"
    cfg = _config()
    src = Path(src).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp)/src.name
        cmd = [sys.executable, __file__, '--execute-one', str(src), str(raw), '--skip-flags', ' '.join(skip_flags)]
        if cell_timeout: cmd += ['--cell-timeout', str(cell_timeout)]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if r.returncode: return f'the run failed:\n{(r.stderr or r.stdout)[-6000:]}'
        nb = finish(json.loads(raw.read_text(encoding='utf-8')), cfg, max_width)
    if paths := find_in_outputs(nb, machine_patterns()):
        hint = ('\n(a warning shows the path of the file that raised it: remove its cause, or filter it in the notebook)'
                if any('Warning' in o for o in paths) else '')
        return 'not written: its outputs hold paths of this machine:\n  ' + '\n  '.join(paths) + hint
    if not allow_skips and (skipped := find_in_outputs(nb, [_re_skipped])):
        return ('not written: cells fell back (their data or weights are missing here), and such a run must not replace '
                'the outputs of a real one; --allow-skips writes it anyway:\n  ' + '\n  '.join(skipped))
    write_nb(nb, dst or src)

def default_nbs() -> list[Path]:
    "Every notebook with a page, but the index (README.md), in the order of the site"
    cfg = get_config(ROOT)
    from build_docs import doc_nbs
    return [nb for nb in doc_nbs(cfg) if nb.resolve()!=(cfg.nbs_path/cfg.readme_nb).resolve()]

def run_nbs(nbs:list[Path], dsts:dict|None=None, n_workers:int=2, **kwargs) -> dict:
    "Run `nbs` (`n_workers` at a time) with `run_nb`, writing to `dsts[nb]` (default: in place); return {nb: why not} of those not written"
    dsts,fails = dsts or {},{}
    def _one(nb):
        t0 = time.time()
        err = run_nb(nb, dsts.get(nb), **kwargs)
        if err: fails[nb] = err
        print(f'{"FAILED" if err else "ok":6} {time.time()-t0:7.1f}s  {_shown(nb)}', flush=True)
    with ThreadPoolExecutor(max(1, n_workers)) as ex: list(ex.map(_one, nbs))
    return fails

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('notebooks', nargs='*', type=Path, help='notebooks to run (default: all but the index)')
    p.add_argument('--n-workers', type=int, default=2, help='notebooks run at once (default: 2)')
    p.add_argument('--cell-timeout', type=int, default=CELL_TIMEOUT, help=f'seconds a cell may run (default: {CELL_TIMEOUT}; 0: no limit)')
    p.add_argument('--allow-skips', action='store_true', help='write notebooks whose cells printed `Skipped: ...` lines')
    p.add_argument('--skip-flags', default=' '.join(SKIP_FLAGS), help='cells with these flags do not run (default: "cuda")')
    p.add_argument('--check', action='store_true', help='run nothing: exit 1 if a notebook lacks the outputs of its code')
    p.add_argument('--execute-one', nargs=2, type=Path, metavar=('SRC', 'DST'), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.execute_one: return execute(*a.execute_one, a.skip_flags.split(), a.cell_timeout or None)
    nbs = [o.resolve() for o in a.notebooks] or default_nbs()
    if missing := [str(o) for o in nbs if not o.exists()]: sys.exit(f'no such notebook: {", ".join(missing)}')
    os.chdir(ROOT)
    if a.check:
        probs = {nb: check_nb(nb) for nb in nbs}
        for nb,ps in probs.items():
            if ps: print(f'{_shown(nb)}:\n  ' + '\n  '.join(ps), file=sys.stderr)
        bad = [nb for nb,ps in probs.items() if ps]
        if bad: sys.exit(f'{len(bad)} of {len(nbs)} notebook(s) lack the outputs of their code')
        return print(f'{len(nbs)} notebook(s) hold the outputs of their code')
    fails = run_nbs(nbs, n_workers=a.n_workers, allow_skips=a.allow_skips, skip_flags=a.skip_flags.split(),
                    cell_timeout=a.cell_timeout or None)
    for nb,err in fails.items(): print(f'\n--- {_shown(nb)}: {err}', file=sys.stderr)
    print(f'{len(nbs)-len(fails)} of {len(nbs)} notebook(s) run and written')
    if fails: sys.exit(1)

if __name__=='__main__': main()
