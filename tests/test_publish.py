"""Published the nbdev way: the GitHub workflows use the actions nbdev 3 projects use, which call commands this
project installs, and the site settings are what `nbdev-docs` expects (it neither rewrites them nor publishes an
empty folder) and keep the site readable offline."""
import re
from importlib.metadata import distribution, PackageNotFoundError
from pathlib import Path

try: import tomllib
except ImportError: import tomli as tomllib  # Python 3.10 (nbdev installs it there)

import yaml
from packaging.requirements import Requirement
from nbdev.config import get_config

ROOT = Path(__file__).resolve().parents[1]
CFG  = get_config(ROOT)
WORKFLOWS = ROOT/'.github'/'workflows'

# What the actions run after checking the project out and installing `nbdev>=3` and `pip install -e ".[dev]"`, as
# their action.yml in github.com/AnswerDotAI/workflows has it (nbdev 3's `nbdev-migrate-config` moves projects from
# fastai/workflows' nbdev-ci and quarto-ghp to these; their earlier versions called nbdev 2's `nbdev_clean`-style
# names, which nbdev 3 no longer installs). quarto-ghp3 publishes the folder `_docs` to the gh-pages branch.
ACTIONS = {
    'answerdotai/workflows/nbdev3-ci':  dict(extra='dev', commands=['nbdev-clean', 'nbdev-export', 'nbdev-test']),
    'answerdotai/workflows/quarto-ghp3': dict(extra='dev', commands=['nbdev-docs'], publishes='_docs'),
}

def _workflow(name): return yaml.safe_load((WORKFLOWS/name).read_text())
def _steps(wf): return [s for job in wf['jobs'].values() for s in job['steps']]
def _action(step): return step['uses'].split('@')[0].lower()
def _project(): return tomllib.loads((ROOT/'pyproject.toml').read_text())['project']

def _console_scripts(dist:str) -> set[str]:
    try: return {e.name for e in distribution(dist).entry_points if e.group=='console_scripts'}
    except PackageNotFoundError: return set()

def _installed_by(extra:str) -> set[str]:
    "The names of the distributions `pip install -e .[extra]` installs directly"
    proj = _project()
    return {Requirement(r).name.lower() for r in proj['dependencies'] + proj['optional-dependencies'][extra]}

def test_workflows_use_nbdevs_actions():
    "CI tests with nbdev3-ci, then runs pytest; the site is deployed with quarto-ghp3 on pushes to main"
    test,deploy = _workflow('test.yaml'),_workflow('deploy.yaml')
    assert [_action(s) for s in _steps(test) if 'uses' in s]==['answerdotai/workflows/nbdev3-ci']
    assert [_action(s) for s in _steps(deploy) if 'uses' in s]==['answerdotai/workflows/quarto-ghp3']
    for wf in (test, deploy):
        for s in _steps(wf):
            if 'uses' in s: assert '@' in s['uses'], f'{s["uses"]}: no ref'
    on = deploy.get('on', deploy.get(True))  # YAML 1.1 reads a bare `on` as true
    assert 'main' in on['push']['branches'] and 'workflow_dispatch' in on
    assert deploy['permissions']['contents']=='write', 'the deploy pushes the gh-pages branch'

def test_action_commands_are_installed():
    "The commands the actions run are console scripts of the nbdev that the extra they install requires"
    nbdev_scripts = _console_scripts('nbdev')
    for wf in WORKFLOWS.glob('*.y*ml'):
        for s in _steps(_workflow(wf.name)):
            if 'uses' not in s: continue
            act = ACTIONS.get(_action(s))
            assert act, f'{wf.name}: {s["uses"]}: not an action whose commands this test knows: look up what it runs'
            assert 'nbdev' in _installed_by(act['extra']), f'the [{act["extra"]}] extra does not install nbdev'
            missing = [c for c in act['commands'] if c not in nbdev_scripts]
            assert not missing, f'{s["uses"]} runs {missing}, which the installed nbdev does not provide'

def test_run_steps_are_installed_commands():
    "Each command of a `run:` step is a console script of a distribution the project or its dev extra installs"
    dev = _installed_by('dev')
    scripts = {c for d in dev for c in _console_scripts(d)} | set(_project().get('scripts', {}))
    for wf in WORKFLOWS.glob('*.y*ml'):
        for s in _steps(_workflow(wf.name)):
            for cmd in re.split(r'&&|\n', s.get('run', '')):
                if cmd.strip(): assert cmd.split()[0] in scripts, f'{wf.name}: {cmd.strip()!r} is not a command the project installs'

def test_ci_runs_the_readme_command():
    "Between nbdev3-ci and its own steps, CI runs every command of the README's test command (the one .ci/run runs)"
    m = re.search(r"^TEST_CMD='(.*)'$", (ROOT/'.ci'/'run').read_text(), re.MULTILINE)
    cmds = [c.strip() for c in m.group(1).split('&&')]
    runs = [s['run'].strip() for s in _steps(_workflow('test.yaml')) if 'run' in s]
    for c in cmds:
        name = c.split()[0]
        if name=='pip': assert '.[dev]' in c  # nbdev3-ci does `pip install -e ".[dev]"`
        elif name in ACTIONS['answerdotai/workflows/nbdev3-ci']['commands']: pass
        else: assert c in runs, f'CI does not run {c!r}'

def test_site_settings():
    "nbdev-docs keeps nbs/nbdev.yml as it is and renders to the folder quarto-ghp3 publishes; formulas and fonts need no network"
    from nbdev.quarto import _nbdev_yml  # what nbdev-docs (refresh_quarto_yml) writes to nbs/nbdev.yml
    assert CFG.doc_path.name==ACTIONS['answerdotai/workflows/quarto-ghp3']['publishes']
    vals = {k: CFG[k] for k in ('title', 'description', 'branch', 'git_url', 'doc_host', 'doc_baseurl')}
    assert (CFG.nbs_path/'nbdev.yml').read_text()==_nbdev_yml.format(doc_path=CFG.doc_path.name, **vals)
    q = yaml.safe_load((CFG.nbs_path/'_quarto.yml').read_text())
    html = q['format']['html']
    assert q['metadata-files']==['nbdev.yml', 'sidebar.yml']
    assert html['html-math-method']=='mathml', 'MathJax would come from a CDN'
    scss = [CFG.nbs_path/t for t in html['theme'] if t.endswith('.scss')]
    assert scss and any(re.search(r'^\$web-font-path:\s*false;', f.read_text(), re.MULTILINE) for f in scss), \
        "the theme's Google font must be switched off"
    assert not get_config(ROOT).clear_all, 'nbdev-clean would remove the outputs'
