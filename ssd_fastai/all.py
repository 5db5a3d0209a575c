"The public API of ssd_fastai: `from ssd_fastai.all import *`."
from .boxes import *
from .data import *
from .anchors import *
from .model import *
from .loss import *
from .metrics import *
from .inference import *
