"""Sample-quality metrics, from general to specific.

* `frechet`: statistics of two feature sets: Fréchet distance, KID (with its
  standard error), k-NN precision/recall, memorisation rate.
* `digits`: FD-digits and the full digits evaluation (`evaluate_digits`), in
  the feature space of a small classifier trained on the embedded digits.
* `inception_fid`: FID with Inception-v3 (`jaxml.models.inception`) and the weights of
  the TF FID graph, the way EDM / pytorch-fid compute it.

FD is biased upward at small sample sizes (the covariance estimate is noisy),
so compare numbers computed from the same number of images. Images
everywhere are NHWC, either float in [-1, 1] (the EDM convention of
`jaxml.data.preprocess.image_generation`; clipped to it) or uint8 in 0..255.
"""

from pathlib import Path  # noqa: F401 - kept for callers that used metrics.Path

from jaxml.diffusion.metrics import (  # noqa: F401
    digits,
    features,
    frechet,
    inception_fid,  # noqa: F401
)
from jaxml.diffusion.metrics.digits import *  # noqa: F401,F403
from jaxml.diffusion.metrics.digits import _load_digits  # noqa: F401
from jaxml.diffusion.metrics.features import (  # noqa: F401
    default_cache_dir,
    features_in_batches,
    quantize_uint8,
    to_signed_unit,
)
from jaxml.diffusion.metrics.frechet import *  # noqa: F401,F403
from jaxml.diffusion.metrics.inception_fid import *  # noqa: F401,F403
from jaxml.models.inception import (  # noqa: F401
    INCEPTION_FEATURES,
    INCEPTION_SIZE,
    InceptionV3,
    inception_param_shapes,
    init_inception_params,
)
