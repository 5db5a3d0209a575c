"The public API of ssd_fastai, with fastai's vision API: `from ssd_fastai.all import *`."
from fastai.vision.all import *
from .boxes import *
from .records import *
from .shapes import *
from .transforms import *
from .data import *
from .anchors import *
from .model import *
from .loss import *
from .metrics import *
from .report import *
from .inference import *
from .deploy import *
from .learner import *
from .callbacks import *
from .lesson import *
