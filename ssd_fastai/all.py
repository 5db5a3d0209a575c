"The public API of ssd_fastai: `from ssd_fastai.all import *`."
from .boxes import *
