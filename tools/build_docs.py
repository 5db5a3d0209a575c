#!/usr/bin/env python
"""Build the documentation site and README.md from the notebooks, without Quarto.

`nbdev-docs` and `nbdev-readme` need Quarto. This script builds the same site from the same nbdev-processed
notebooks (`show_doc` cells added after exports, hidden and exported cells removed, symbols linked) with
nbconvert's markdown renderer, pygments and latex2mathml, so it runs wherever the project's `[dev]` extra is
installed:

    python tools/build_docs.py                  # build _docs/ from the outputs the notebooks store
    python tools/build_docs.py --exec           # run every notebook first (as tools/run_nbs.py does, into the build only)
    python tools/build_docs.py --exec-only nbs/00_boxes.ipynb   # run some notebooks first, the others as stored
    python tools/build_docs.py nbs/00_boxes.ipynb --out site    # the pages of some notebooks only
    python tools/build_docs.py --readme         # write README.md from nbs/index.ipynb
    python tools/build_docs.py --check-readme   # exit 1 if README.md differs from what --readme would write

A page as a browser shows it, without a window (Debian's `chromium` package):

    chromium --headless --no-sandbox --hide-scrollbars --window-size=1280,4000 --screenshot=boxes.png "file://$PWD/_docs/boxes.html"

Like Quarto on GitHub Pages, the default build executes nothing but what nbdev's doc processors run (exported
cells, imports and `show_doc`): the pages show the outputs stored by `python tools/run_nbs.py`. With `--exec`,
each notebook is first run by that tool's code in a fresh process (all cells but `#| eval: false` and `#| cuda`
ones; fallback runs allowed), written to a temporary copy and built from there, so both builds give the same pages.
In the pages, `#| hide` cells are left out and `#| echo: false`, `#| output: false`, `#| include: false`
are honoured; formulas (`$...$`, `$$...$$`) are MathML, so no page needs the network. Links to library symbols
and to other notebooks point inside the site.
"""
from __future__ import annotations
import argparse, html, os, posixpath, re, shutil, sys, tempfile, warnings
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # the library, as `nbdev-test` makes it importable

import yaml
from fastcore.nbio import read_nb, dict2nb, join_out, nb_frontmatter
from fastcore.xtras import exec_local
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
from nbdev.config import get_config, nbpath2html
from nbdev.doclinks import nbglob, NbdevLookup, _qual_syms
from nbdev.processors import FilterDefaults
from nbdev.quarto import _sort, _recursive_parser
from nbdev.readme_filter import doc_link

from run_nbs import CELL_TIMEOUT, as_terminal, run_nbs

# ---------------------------------------------------------------------------------------------------------------
# Which notebooks, in which order

SKIP_FOLDER_RE = r'(?:^[_.]|^www\$)'  # what `nbdev_sidebar` skips

def doc_nbs(cfg) -> list[Path]:
    "Every notebook that gets a page, in the order of nbdev's sidebar"
    files = nbglob(cfg.nbs_path, func=lambda a,b: (Path(a),b), skip_folder_re=SKIP_FOLDER_RE).sorted(key=_sort)
    return [Path(d)/n for d,n in files]

def page_of(nb:Path, cfg) -> str:
    "Path of the page for notebook `nb`, relative to the site root (`00_boxes.ipynb` -> `boxes.html`)"
    return nbpath2html(Path(nb).resolve().relative_to(cfg.nbs_path.resolve())).as_posix()

def sidebar_entries(cfg, nbs:list[Path]) -> list:
    "nbdev's sidebar: `nbs/sidebar.yml` if `custom_sidebar`, else what `nbdev_sidebar` would write"
    yml = cfg.nbs_path/'sidebar.yml'
    if cfg.custom_sidebar and yml.exists():
        return yaml.safe_load(yml.read_text())['website']['sidebar']['contents']
    tree = {}
    for nb in nbs:
        d = tree
        for part in nb.resolve().relative_to(cfg.nbs_path.resolve()).parent.parts: d = d.setdefault(part, {})
        d[nb.name] = nb.name
    contents = []
    _recursive_parser(tree, contents, Path())
    return contents

# ---------------------------------------------------------------------------------------------------------------
# Processing a notebook: nbdev's doc processors

def own_lookup(cfg):
    "Make symbol links work before the library is pip-installed: add its `_modidx` to nbdev's lookup table"
    nl = NbdevLookup()
    f = cfg.lib_path/'_modidx.py'
    if cfg.lib_name in nl.entries or not f.exists(): return
    d = _qual_syms(exec_local(f.read_text(encoding='utf-8'), 'd'))
    nl.entries[cfg.lib_name] = d
    for mod,syms in d['syms'].items():  # the table is shared (cached) by every `NbdevLookup`
        for k,v in syms.items():
            nl.syms.setdefault(k, v)
            nl.syms.setdefault(k.removeprefix(mod+'.'), v)

def proc_nb(src:Path, stored:Path|None=None):
    "Notebook `src` (its content read from `stored` if given: a run of it) processed for the docs as `nbdev-docs` does"
    cfg = get_config()
    own_lookup(cfg)
    src = Path(src).resolve()
    os.environ['IN_TEST'] = '1'
    nb = read_nb(stored or src)
    nb.path_ = str(src)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Found cells containing imports')
        FilterDefaults()(nb)
    return nb

SHOW_DOC_HINT = ('(Building docs, nbdev runs only the exported cells, the show_doc cells and every cell with an import '
                 'statement, in a fresh shell; nbdev-docs does the same. A cell that mixes imports with other code must '
                 'only use names defined in such cells: put imports in a cell of their own.)')

# ---------------------------------------------------------------------------------------------------------------
# Markdown and cells to HTML

def frontmatter(nb) -> dict:
    "The YAML frontmatter nbdev's `FrontmatterProc` puts in the first raw cell"
    for c in nb.cells:
        if c.cell_type=='raw' and c.source.strip().startswith('---'):
            return yaml.safe_load(c.source.strip().strip('-')) or {}
    return {}

_re_attr_link = re.compile(r'\[([^\]]*)\]\(([^)\s]+)\)\{([^}]*)\}')
_re_fdiv      = re.compile(r'^:::+\s*(\{[^}]*\}|[\w-]+)?\s*$', re.MULTILINE)

def _attr_link(m):
    "A link with pandoc attributes, `[txt](url){target='_blank'}`, as an HTML link"
    txt,url,attrs = m.groups()
    kv = dict(re.findall(r'([\w-]+)="([^"]*)"', attrs))
    cls = ' '.join(re.findall(r'(?:^|\s)\.([\w-]+)', attrs))
    xtra = ''.join(f' {k}="{html.escape(v)}"' for k,v in kv.items() if k in ('target','style','title'))
    if cls: xtra += f' class="{cls}"'
    return f'<a href="{html.escape(url)}"{xtra}>{txt}</a>'

def _fdiv(m):
    "Pandoc fenced divs (`::: {.callout-note}` ... `:::`) as HTML divs"
    a = m.group(1)
    if a is None: return '\n</div>\n'
    cls = re.findall(r'\.([\w-]+)', a) if a.startswith('{') else [a]
    if any(c.startswith('callout') for c in cls): cls.append('callout')
    return f'\n<div class="{" ".join(cls)}">\n'

def pandoc_id(text:str) -> str:
    "The identifier pandoc (so Quarto, so nbdev's `_modidx`) gives a heading"
    s = re.sub(r'[^\w\s.\-]', '', text.lower())
    s = re.sub(r'\s+', '-', s.strip())
    s = re.sub(r'^[^a-z]+', '', s)
    return s or 'section'

_re_mo_name = re.compile(r'<mo>([A-Za-z]{2,})</mo>')

def tex2mathml(tex:str, display:bool=False) -> str:
    "The formula `tex` (LaTeX) as MathML, which browsers render with no script and no network"
    from latex2mathml.converter import convert
    try: res = convert(tex.strip(), display='block' if display else 'inline')
    except Exception as e: raise ValueError(f"the formula {tex!r} can't be rendered as MathML: {type(e).__name__}: {e}") from None
    return _re_mo_name.sub(r'<mi>\1</mi>', res)  # `\operatorname{softplus}`, `\min`: a name, like `\log`, not an operator's spacing

class MathMLRenderer(IPythonRenderer):
    "nbconvert's markdown renderer, with formulas as MathML instead of TeX left for MathJax"
    def block_math(self, body): return tex2mathml(body, display=True)
    def inline_math(self, body): return tex2mathml(body)
    def latex_environment(self, name, body): return tex2mathml(f'\\begin{{{name}}}{body}\\end{{{name}}}', display=True)

def md2html(md:str, attachments=None) -> str:
    "Render notebook markdown (with pandoc's link attributes and fenced divs, and `$` math) to HTML"
    md = _re_attr_link.sub(_attr_link, md)
    md = _re_fdiv.sub(_fdiv, md)
    for k,v in (attachments or {}).items():
        mime = next(iter(v))
        md = md.replace(f'attachment:{k}', f'data:{mime};base64,{v[mime]}')
    return MarkdownWithMath(renderer=MathMLRenderer(escape=False)).render(md)

def highlight(code:str, lang:str='python') -> str:
    from pygments import highlight as _hl
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name, TextLexer
    try: lexer = get_lexer_by_name(lang)
    except Exception: lexer = TextLexer()
    return _hl(code, lexer, HtmlFormatter(cssclass='highlight'))

_re_opt = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')

def cell_opts(src:str):
    "Split the leading `#| key: value` lines (Quarto cell options) off `src`"
    lines,opts = src.splitlines(),{}
    while lines and _re_opt.match(lines[0]):
        k,v = _re_opt.match(lines.pop(0)).groups()
        try: v = yaml.safe_load(v) if v else True
        except yaml.YAMLError: pass
        opts[k] = str(v).lower() if isinstance(v, bool) else v
    return opts, '\n'.join(lines).strip('\n')

def _pre(text, cls): return f'<div class="cell-output {cls}"><pre><code>{text}</code></pre></div>'

def _img(mime, data, meta):
    wh = ''.join(f' {k}="{meta[k]}"' for k in ('width','height') if k in meta)
    if mime=='image/svg+xml': return f'<div class="cell-output cell-output-display">{data}</div>'
    return f'<div class="cell-output cell-output-display"><img src="data:{mime};base64,{data.strip()}"{wh} alt=""></div>'

def output2html(o, asis=False) -> str:
    "One output of a code cell as HTML"
    from nbconvert.filters.ansi import ansi2html
    t = o.get('output_type')
    if t=='stream': return _pre(ansi2html(as_terminal(join_out(o.text))), f'cell-output-{o.get("name","stdout")}')
    if t=='error': return _pre(ansi2html('\n'.join(o.get('traceback', []))), 'cell-output-error')
    data,meta = o.get('data', {}),o.get('metadata', {})
    def _s(k): return join_out(data[k])
    if 'text/markdown' in data and asis: return md2html(_s('text/markdown'))
    for mime in ('text/html','image/svg+xml','image/png','image/jpeg','image/gif','text/markdown','text/latex','text/plain'):
        if mime not in data: continue
        if mime=='text/html':     return f'<div class="cell-output cell-output-display">{_s(mime)}</div>'
        if mime.startswith('image/'): return _img(mime, _s(mime), meta.get(mime, meta))
        if mime=='text/markdown': return f'<div class="cell-output cell-output-markdown">{md2html(_s(mime))}</div>'
        if mime=='text/latex':    return f'<div class="cell-output cell-output-display">{md2html(_s(mime))}</div>'
        return _pre(html.escape(_s(mime)), 'cell-output-display')
    return ''

def cell2html(cell) -> str:
    "One cell of a processed notebook as HTML"
    if cell.cell_type=='markdown': return md2html(cell.source, cell.get('attachments'))
    if cell.cell_type!='code': return ''
    opts,src = cell_opts(cell.source)
    if opts.get('include')=='false': return ''
    res = []
    if opts.get('echo')!='false' and src.strip():
        code = f'<div class="sourceCode">{highlight(src, cell.get("metadata", {}).get("language", "python"))}</div>'
        if opts.get('code-fold') in ('true','show'):
            summ = html.escape(str(opts.get('code-summary', 'Code')))
            code = f'<details class="code-fold"{" open" if opts["code-fold"]=="show" else ""}><summary>{summ}</summary>{code}</details>'
        res.append(code)
    if opts.get('output')!='false':
        res += [output2html(o, asis=opts.get('output')=='asis') for o in cell.get('outputs', [])]
    res = [r for r in res if r]
    if not res: return ''
    if opts.get('output')=='asis' and opts.get('echo')=='false': return ''.join(res)
    return f'<div class="cell">{"".join(res)}</div>'

_re_h = re.compile(r'<h([1-6]) id="([^"]*)">(.*?)<a class="anchor-link" href="#[^"]*">&#182;</a></h\1>', re.DOTALL)

def _strip_tags(s): return html.unescape(re.sub(r'<[^>]+>', '', s))

def fix_headings(body:str):
    "Give headings pandoc's identifiers (unique on the page); return the body and the (level, id, text) of each"
    seen,toc = {},[]
    def _f(m):
        lvl,_,inner = m.groups()
        txt = _strip_tags(inner).strip()
        hid = pandoc_id(txt)
        n = seen.get(hid, 0); seen[hid] = n+1
        if n: hid = f'{hid}-{n}'
        toc.append((int(lvl), hid, txt))
        return f'<h{lvl} id="{hid}" class="anchored">{inner}<a class="anchor-link" href="#{hid}" aria-label="Link to this section">#</a></h{lvl}>'
    return _re_h.sub(_f, body), toc

# ---------------------------------------------------------------------------------------------------------------
# Pages

def _rel(target:str, page:str) -> str:
    "`target` (relative to the site root) as a link from `page`"
    return posixpath.relpath(target, posixpath.dirname(page) or '.')

class Site:
    "The pages of the site being built into `out`"
    def __init__(self, cfg, out:Path, nbs:list[Path]):
        self.cfg,self.out,self.nbs = cfg,Path(out),nbs
        self.site_url = (cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/')).rstrip('/') + '/'
        self.titles = {}

    def fix_links(self, body:str, page:str, nb_dir:Path) -> str:
        "Point links to the hosted site, to notebooks and to files next to the notebooks inside the site"
        def _f(m):
            attr,url = m.groups()
            u = html.unescape(url)
            if u.startswith(self.site_url):
                path,_,frag = u[len(self.site_url):].partition('#')
                path = re.sub(r'\.html\.md$', '.html', path) or 'index.html'
                if path.endswith('/'): path += 'index.html'
                return f'{attr}="{html.escape(_rel(path, page))}{"#"+frag if frag else ""}"'
            sp = urlsplit(u)
            if sp.scheme or sp.netloc or u.startswith(('#','/')) or not sp.path: return m.group(0)
            src = (nb_dir/sp.path).resolve()
            try: rel_src = src.relative_to(self.cfg.nbs_path.resolve())
            except ValueError: return m.group(0)
            if src.suffix in ('.ipynb','.qmd'): tgt = nbpath2html(rel_src).as_posix()
            elif src.is_file() and src.suffix!='.py':
                tgt = rel_src.as_posix()
                (self.out/tgt).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, self.out/tgt)
            else: return m.group(0)
            return f'{attr}="{html.escape(_rel(tgt, page))}{"#"+sp.fragment if sp.fragment else ""}"'
        return re.sub(r'\b(href|src)="([^"]*)"', _f, body)

    def sidebar(self, page:str) -> str:
        "The sidebar of `page`, from nbdev's sidebar entries"
        def _link(href, text=None):
            href = nbpath2html(Path(href)).as_posix() if href.endswith(('.ipynb','.qmd')) else href
            text = text or self.titles.get(href, Path(href).stem)
            cur = ' active' if href==page else ''
            return f'<li><a class="sidebar-link{cur}" href="{html.escape(_rel(href, page))}">{html.escape(text)}</a></li>'
        def _items(contents):
            res = []
            for o in contents:
                if isinstance(o, str): res.append(_link(o))
                elif 'section' in o:
                    title = html.escape(str(o['section']).replace('_', ' '))
                    head = f'<a class="sidebar-link" href="{html.escape(_rel(nbpath2html(Path(o["href"])).as_posix(), page))}">{title}</a>' if o.get('href') else title
                    res.append(f'<li class="sidebar-section"><span class="sidebar-section-title">{head}</span><ul>{"".join(_items(o.get("contents", [])))}</ul></li>')
                elif 'href' in o: res.append(_link(o['href'], o.get('text')))
            return res
        return f'<ul class="sidebar-list">{"".join(_items(self.entries))}</ul>'

    def page(self, page:str, nb, nb_dir:Path) -> str:
        "The full HTML of `page`, made from the processed notebook `nb`"
        fm = frontmatter(nb)
        title,desc = fm.get('title', Path(page).stem),fm.get('description', '')
        body = '\n'.join(cell2html(c) for c in nb.cells)
        body,toc = fix_headings(body)
        body = self.fix_links(body, page, nb_dir)
        toc = ''.join(f'<li class="toc-h{l}"><a href="#{i}">{html.escape(t)}</a></li>' for l,i,t in toc if l in (2,3))
        root = _rel('index.html', page)
        cfg = self.cfg
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} – {html.escape(cfg.title)}</title>
<meta name="description" content="{html.escape(desc or cfg.get('description', ''))}">
<link rel="stylesheet" href="{_rel('site.css', page)}">
</head>
<body>
<header class="navbar"><a class="navbar-title" href="{root}">{html.escape(cfg.title)}</a>
<a class="navbar-repo" href="{html.escape(cfg.git_url)}">GitHub</a></header>
<div class="layout">
<nav class="sidebar" aria-label="Pages">{self.sidebar(page)}</nav>
<main class="content">
<header class="page-header"><h1 class="title">{html.escape(title)}</h1>{f'<p class="description">{html.escape(desc)}</p>' if desc else ''}</header>
{body}
</main>
<nav class="toc" aria-label="On this page">{f'<h2>On this page</h2><ul>{toc}</ul>' if toc else ''}</nav>
</div>
</body>
</html>
"""

    def default_index(self) -> str:
        "An index page listing every page, for when there is no index notebook yet"
        nb = dict2nb({'cells': [{'cell_type':'raw', 'metadata':{}, 'source': f'---\ntitle: {self.cfg.title}\n---'},
                                {'cell_type':'markdown', 'metadata':{}, 'source': self.cfg.get('description', '')}],
                      'metadata':{}, 'nbformat':4, 'nbformat_minor':5})
        return self.page('index.html', nb, self.cfg.nbs_path)

_re_symlink = re.compile(r'<a href="([^"#:]*)#([^"]+)">(<code>[^<]*</code>)</a>')

def drop_dead_symbol_links(htmls:dict, out:Path) -> dict:
    "Unlink symbols (nbdev links every backticked name in `_modidx`) whose page has no such anchor: private ones"
    def _ids(page):
        text = htmls.get(page) or ((out/page).read_text(encoding='utf-8') if (out/page).exists() else None)
        return None if text is None else set(re.findall(r'\bid="([^"]+)"', text))
    ids = {}
    def _f(page):
        def _g(m):
            tgt = posixpath.normpath(posixpath.join(posixpath.dirname(page), m.group(1))) if m.group(1) else page
            if tgt not in ids: ids[tgt] = _ids(tgt)
            return m.group(0) if ids[tgt] is None or html.unescape(m.group(2)) in ids[tgt] else m.group(3)
        return _g
    return {page: _re_symlink.sub(_f(page), text) for page,text in htmls.items()}

def error_nb(nb:Path, err:str):
    "A stand-in for the page of notebook `nb`, which could not be processed"
    return dict2nb({'cells': [{'cell_type':'raw', 'metadata':{}, 'source': f'---\ntitle: {nb.stem}\n---'},
                              {'cell_type':'markdown', 'metadata':{}, 'source': 'This page could not be built:'},
                              {'cell_type':'code', 'metadata':{}, 'source': '', 'execution_count': None,
                               'outputs': [{'output_type':'stream', 'name':'stderr', 'text': err}]}],
                    'metadata':{}, 'nbformat':4, 'nbformat_minor':5})

def site_css(cfg) -> str:
    "The site's stylesheet: ours, pygments' and the project's `nbs/styles.css`"
    from pygments.formatters import HtmlFormatter
    css = (Path(__file__).parent/'docs_site.css').read_text()
    css += '\n/* pygments */\n' + HtmlFormatter(style='friendly').get_style_defs('.highlight')
    styles = cfg.nbs_path/'styles.css'
    if styles.exists(): css += '\n/* nbs/styles.css */\n' + styles.read_text()
    return css

def _in(nb:Path, nbs:list[Path]) -> bool: return any(nb.resolve()==Path(o).resolve() for o in nbs)

def _clean_out(out:Path):
    "Empty `out`, refusing to when it holds anything but a site this script built"
    if out.exists() and any(out.iterdir()):
        if not (out/'.build_docs').exists() and not (out/'.nojekyll').exists():
            sys.exit(f'{out} is not empty and was not built by this script; refusing to overwrite it')
        for p in out.iterdir(): shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)

def _proc_or_error(nb:Path, stored:Path|None, fails:dict):
    "`proc_nb(nb, stored)`, or a page saying why it failed (recorded in `fails`)"
    try: return proc_nb(nb, stored)
    except Exception as e:
        msg = f'{type(e).__name__}: {e}' + (f'\n{SHOW_DOC_HINT}' if re.match(r'Error.* in cell \d+', str(e)) else '')
        fails[nb] = f'{fails[nb]}\n{msg}' if nb in fails else msg
        return error_nb(nb, msg)

def build_site(out:Path, only:list[Path]|None=None, execute:bool|list[Path]=False, n_workers:int=2,
               cell_timeout:int|None=CELL_TIMEOUT) -> int:
    "Build the site into `out` (pages of `only`, or all) from the stored outputs, or from a run of all notebooks or those in `execute`; return the failures"
    cfg = get_config()
    nbs = doc_nbs(cfg)
    todo = [nb for nb in nbs if _in(nb, only)] if only else nbs
    out = Path(out).resolve()
    if only: out.mkdir(parents=True, exist_ok=True)  # update these pages, keep the others
    else: _clean_out(out)
    with tempfile.TemporaryDirectory() as tmp:
        run = todo if execute is True else [nb for nb in todo if _in(nb, execute or [])]
        runs = {nb: Path(tmp)/(page_of(nb, cfg).replace('/','__')+'.ipynb') for nb in run}
        # a run that fails leaves the page of the stored notebook: API docs and the outputs of its last run
        fails = run_nbs(run, runs, n_workers=n_workers, allow_skips=True, cell_timeout=cell_timeout)
        site = Site(cfg, out, nbs)
        site.titles = {page_of(nb, cfg): nb_frontmatter(read_nb(nb)).get('title', Path(page_of(nb, cfg)).stem) for nb in nbs}
        site.entries = sidebar_entries(cfg, nbs)
        htmls = {}
        for nb in todo:
            page,stored = page_of(nb, cfg),(runs[nb] if nb in runs and nb not in fails else None)
            pnb = _proc_or_error(nb, stored, fails)
            try: htmls[page] = site.page(page, pnb, nb.parent)
            except ValueError as e:  # a formula MathML can't show
                fails[nb] = str(e)
                htmls[page] = site.page(page, error_nb(nb, str(e)), nb.parent)
    for nb,err in fails.items(): print(f'\n--- FAILED: {nb.relative_to(cfg.nbs_path)}\n{err}', file=sys.stderr)
    for page,text in drop_dead_symbol_links(htmls, out).items():
        (out/page).parent.mkdir(parents=True, exist_ok=True)
        (out/page).write_text(text, encoding='utf-8')
    if not (out/'index.html').exists(): (out/'index.html').write_text(site.default_index(), encoding='utf-8')
    (out/'site.css').write_text(site_css(cfg), encoding='utf-8')
    (out/'.nojekyll').touch()    # GitHub Pages: serve the files as they are
    (out/'.build_docs').write_text('Built by tools/build_docs.py\n')
    print(f'{len(todo)} pages written to {out}' + (f'; {len(fails)} notebook(s) FAILED' if fails else ''))
    return len(fails)

# ---------------------------------------------------------------------------------------------------------------
# README.md

def _readme_links(md:str, cfg) -> str:
    "Relative links to notebooks and pages as links to the hosted docs, as nbdev's README filter does"
    base = cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/')
    nbdir = Path(cfg.readme_nb).parent.as_posix()
    nbs = (cfg.nbs_path/cfg.readme_nb).parent.resolve().relative_to(cfg.config_path.resolve()).as_posix()
    img = lambda m: f'{m.group(1)}{posixpath.normpath(posixpath.join(nbs, m.group(2)))})'   # pictures: from the repository
    md = re.sub(r'(!\[[^\]]*\]\()(?![a-z]+:|/)([^)\s]+)\)', img, md)
    return re.sub(r'(\]\()([^)\s]+)(\))', lambda m: m.group(1)+doc_link(m.group(2), base, nbdir)+m.group(3), md)

def _indent(s): return '\n'.join('    '+l if l.strip() else '' for l in s.rstrip('\n').splitlines())

def readme_text(src:Path|None=None) -> str:
    "README.md made from `readme_nb` (nbs/index.ipynb), as `nbdev-readme` would: markdown, code and text outputs"
    cfg = get_config()
    src = Path(src or cfg.nbs_path/cfg.readme_nb)
    if not src.exists(): sys.exit(f'{src} not found')
    nb = proc_nb(src)
    fm = frontmatter(nb)
    res = [f'# {fm.get("title", cfg.title)}']
    if fm.get('description'): res.append(f'> {fm["description"]}')
    for c in nb.cells:
        if c.cell_type=='markdown': res.append(_readme_links(c.source.strip(), cfg))
        if c.cell_type!='code': continue
        opts,code = cell_opts(c.source)
        if opts.get('include')=='false': continue
        if opts.get('echo')!='false' and code.strip(): res.append(f'```{c.get("metadata", {}).get("language", "python")}\n{code}\n```')
        if opts.get('output')=='false': continue
        for o in c.get('outputs', []):
            data = o.get('data', {})
            txt = o.get('text') if o.get('output_type')=='stream' else data.get('text/markdown') or data.get('text/plain')
            txt = join_out(txt)
            if not txt: continue
            if o.get('output_type')=='stream': txt = as_terminal(txt)
            res.append(txt.strip() if 'text/markdown' in data else _indent(txt))
    return '\n\n'.join(r for r in res if r) + '\n'

# ---------------------------------------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('notebooks', nargs='*', type=Path, help='only build the pages of these notebooks (default: all)')
    p.add_argument('--out', type=Path, help="site folder (default: the `doc_path` of pyproject's [tool.nbdev], _docs/)")
    p.add_argument('--exec', action='store_true', help='run every notebook first (into the build; the notebooks are not changed)')
    p.add_argument('--exec-only', nargs='+', type=Path, metavar='NB', help='run only these notebooks first (the others as stored)')
    p.add_argument('--n-workers', type=int, default=2, help='notebooks run at once')
    p.add_argument('--cell-timeout', type=int, default=CELL_TIMEOUT, help=f'seconds a cell may run (default: {CELL_TIMEOUT}; 0: no limit)')
    p.add_argument('--readme', action='store_true', help='write README.md from nbs/index.ipynb instead of building the site')
    p.add_argument('--readme-out', type=Path, default=ROOT/'README.md', help='where --readme writes (default: README.md)')
    p.add_argument('--check-readme', action='store_true', help='exit 1 if README.md is not what --readme would write')
    a = p.parse_args()
    a.notebooks = [o.resolve() for o in a.notebooks]
    if a.out: a.out = a.out.resolve()
    if a.exec_only: a.exec_only = [o.resolve() for o in a.exec_only]
    a.readme_out = a.readme_out.resolve()
    os.chdir(ROOT)  # nbdev finds its config (pyproject.toml) from the working directory
    if a.readme or a.check_readme:
        txt = readme_text()
        if a.check_readme:
            f = ROOT/'README.md'
            if f.exists() and f.read_text(encoding='utf-8')==txt: return print('README.md is up to date')
            import difflib
            old = f.read_text(encoding='utf-8').splitlines(True) if f.exists() else []
            sys.stdout.writelines(difflib.unified_diff(old, txt.splitlines(True), 'README.md', 'from nbs/index.ipynb'))
            sys.exit('README.md is out of date: run `python tools/build_docs.py --readme`')
        a.readme_out.write_text(txt, encoding='utf-8')
        return print(f'wrote {a.readme_out}')
    out = a.out or get_config().doc_path
    nfail = build_site(out, a.notebooks, execute=a.exec or a.exec_only or False, n_workers=a.n_workers,
                       cell_timeout=a.cell_timeout or None)
    if nfail: sys.exit(1)

if __name__=='__main__': main()
