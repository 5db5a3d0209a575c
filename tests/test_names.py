"""`from ssd_fastai.all import *` after `from fastai.vision.all import *` replaces none of fastai's names."""
import fastai.vision.all as fv
import ssd_fastai.all as sa

def test_no_name_of_fastai_is_replaced():
    ours = [n for n in dir(sa) if not n.startswith('_')]
    assert len(ours) > len([n for n in dir(fv) if not n.startswith('_')])   # fastai's names are there too, as they are
    assert [n for n in ours if hasattr(fv, n) and getattr(fv, n) is not getattr(sa, n)] == []
