"What the tests share: small datasets written in temporary folders, painted-box checks, a tiny trained learner, fresh processes."
import json, subprocess, sys, warnings
from pathlib import Path
import numpy as np, pytest, torch
import matplotlib
matplotlib.use('Agg')
from PIL import Image


# ---------------------------------------------------------------- files

def write_image(path, size=(64, 48), mode='RGB', square=False):
    "Write an image of PIL `mode` to `path`: grey, with a red square in its upper-left quarter if `square`; returns `path`."
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new('RGB', size, (60, 70, 80) if square else (128, 128, 128))
    if square: im.paste((230, 40, 40), (size[0]//4, size[1]//4, size[0]//2+1, size[1]//2+1))
    im = Image.new('I;16', size, 300) if mode=='I;16' else im.convert(mode)
    im.save(path)
    return path

def write_voc(root, objs_per_img, size=(64, 48), write_imgs=True, splits=None):
    "A VOC folder: `objs_per_img` {stem: [(name, (xmin,ymin,xmax,ymax)), ...]} in raw (1-based) coordinates; `splits` {name: [stems]}."
    root = Path(root)
    (root/'Annotations').mkdir(parents=True, exist_ok=True)
    for stem, objs in objs_per_img.items():
        if write_imgs: write_image(root/'JPEGImages'/f'{stem}.png', size)
        ob = ''.join(f"<object><name>{n}</name><truncated>0</truncated><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin>"
                     f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b in objs)
        (root/'Annotations'/f'{stem}.xml').write_text(
            f"<annotation><filename>{stem}.png</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
            f"<depth>3</depth></size>{ob}</annotation>")
    for name, stems in (splits or {}).items():
        (root/'ImageSets'/'Main').mkdir(parents=True, exist_ok=True)
        (root/'ImageSets'/'Main'/f'{name}.txt').write_text(''.join(f'{s}\n' for s in stems))
    return root

def write_coco(root, imgs, anns, cats=({'id': 1, 'name': 'a'}, {'id': 2, 'name': 'b'}), fname='annotations.json'):
    "A COCO file in `root`: `imgs` [(file_name, (w,h), write?)] in `root/images`, `anns` [(img_idx, cat_id, [x,y,w,h], iscrowd)]."
    root = Path(root)
    (root/'images').mkdir(parents=True, exist_ok=True)
    images = []
    for i, (fn, sz, write) in enumerate(imgs):
        if write: write_image(root/'images'/fn, sz)
        images.append(dict(id=i+1, file_name=fn, width=sz[0], height=sz[1]))
    annotations = [dict(id=j+1, image_id=i+1, category_id=c, bbox=b, iscrowd=cr, area=0) for j, (i, c, b, cr) in enumerate(anns)]
    (root/fname).parent.mkdir(parents=True, exist_ok=True)
    (root/fname).write_text(json.dumps(dict(images=images, annotations=annotations, categories=list(cats))))
    return root/fname

def write_yolo(root, lines, names=('a', 'b'), how='list', size=(100, 50), sub='train'):
    "A YOLO folder with one image `images/sub/0.png` and its label file of `lines`; class names as a YAML 'list', 'dict', or 'txt'."
    root = Path(root)
    write_image(root/'images'/sub/'0.png', size)
    (root/'labels'/sub).mkdir(parents=True, exist_ok=True)
    (root/'labels'/sub/'0.txt').write_text('\n'.join(lines))
    if how=='list': (root/'data.yaml').write_text('names: [' + ', '.join(names) + ']\n')
    elif how=='dict': (root/'data.yaml').write_text('names:\n' + ''.join(f'  {i}: {n}\n' for i, n in enumerate(names)))
    else: (root/'classes.txt').write_text('\n'.join(names))
    return root

def box_images(root, n=6, seed=1, sizes=(60, 120)):
    "Images with one white rectangle on black, and `DetRecord`s whose box is that rectangle."
    from ssd_fastai.records import DetRecord
    rng, recs = np.random.default_rng(seed), []
    for i in range(n):
        w, h = (int(rng.integers(*sizes)) for _ in range(2))
        x0, y0 = int(rng.integers(0, w//2)), int(rng.integers(0, h//2))
        x1, y1 = int(rng.integers(x0+10, w)), int(rng.integers(y0+10, h))
        a = np.zeros((h, w, 3), np.uint8); a[y0:y1, x0:x1] = 255
        Image.fromarray(a).save(Path(root)/f'{i}.png')
        recs.append(DetRecord(Path(root)/f'{i}.png', [[x0, y0, x1, y1]], ['box']))
    return recs

# ---------------------------------------------------------------- checks

def painted_box(img:torch.Tensor, thresh:float=0.5)->torch.Tensor:
    "The scaled xyxy box around the pixels of `img` (C,H,W) brighter than `thresh` (pixel edges: the full image is (-1,-1,1,1))."
    m = img.as_subclass(torch.Tensor).mean(0)>thresh
    if not m.any(): return torch.zeros(4)
    h, w = m.shape
    ys, xs = torch.where(m)
    px = torch.stack([xs.min(), ys.min(), xs.max()+1, ys.max()+1]).float()
    return px/torch.tensor([w, h, w, h])*2-1

def encloses(outer:torch.Tensor, inner:torch.Tensor, tol:float=0.)->bool:
    "Does box `outer` contain box `inner` (xyxy, same scale), up to `tol`?"
    return bool((outer[..., :2]<=inner[..., :2]+tol).all() and (outer[..., 2:]>=inner[..., 2:]-tol).all())

def warns(f, *args, **kwargs):
    "Call `f`, returning its result and the text of all the warnings it raised."
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        res = f(*args, **kwargs)
    return res, ' | '.join(str(o.message) for o in w)

def quiet(f, *args, **kwargs):
    "Call `f` with warnings silenced."
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return f(*args, **kwargs)

def fp16_cpu_autocast()->bool:
    "Does this torch have float16 autocast on the CPU?"
    try:
        with torch.autocast('cpu', dtype=torch.float16): torch.ones(2, 2)@torch.ones(2, 2)
        return True
    except Exception: return False

# ---------------------------------------------------------------- learners and processes

def fit_one(dls, arch='resnet10t', **kwargs):
    "One epoch of a small SSD on `dls`; returns the learner."
    from ssd_fastai.learner import ssd_learner
    learn = ssd_learner(dls, arch=arch, pretrained=False, **kwargs)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    return learn

@pytest.fixture(scope='module')
def tiny_learner(tmp_path_factory):
    "A small SSD fitted for one epoch on 16 synthetic images, decoding every detection (score threshold 0)."
    from ssd_fastai.shapes import make_shapes
    from ssd_fastai.data import detection_dls
    from ssd_fastai.inference import DetDecoder
    d = tmp_path_factory.mktemp('learn')
    dls = quiet(detection_dls, make_shapes(d/'s', n=16, size=48), size=48, bs=8, num_workers=0)
    learn = fit_one(dls, path=d)
    learn.loss_func.decoder = DetDecoder(score_thresh=0.)   # untrained: keep every detection, to check where the boxes are
    return learn

def run_python(code:str, timeout=300)->dict:
    "Run `code` in a fresh Python process; it prints one JSON line, returned."
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])

def cli(*args)->list:
    "The command line of the installed `ssd-fastai` with `args` (through Python where the script is not there)."
    exe = Path(sys.executable).parent/'ssd-fastai'
    return ([str(exe)] if exe.exists() else [sys.executable, '-c', 'from ssd_fastai.cli import main; main()']) + [str(a) for a in args]

@pytest.fixture(scope='session')
def hub_cache(tmp_path_factory):
    "A Hugging Face cache holding 'pretrained' weights of timm's `resnet10t` (random ones, saved here), as timm finds downloaded ones offline."
    import timm, safetensors.torch
    d = tmp_path_factory.mktemp('hf')
    torch.manual_seed(123)
    m = timm.create_model('resnet10t', pretrained=False)
    repo = d/'models--timm--resnet10t.c3_in1k'
    (repo/'snapshots'/('0'*40)).mkdir(parents=True); (repo/'refs').mkdir()
    safetensors.torch.save_file(m.state_dict(), str(repo/'snapshots'/('0'*40)/'model.safetensors'))
    (repo/'refs'/'main').write_text('0'*40)
    return d, m.state_dict()

@pytest.fixture
def offline_hub(hub_cache, monkeypatch):
    "`pretrained=True` finds `hub_cache`'s weights in this process (and in the processes it starts), with no network."
    import huggingface_hub.constants as hc
    d, sd = hub_cache
    monkeypatch.setattr(hc, 'HF_HUB_CACHE', str(d)); monkeypatch.setattr(hc, 'HF_HUB_OFFLINE', True)
    monkeypatch.setenv('HF_HUB_CACHE', str(d)); monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    return sd
