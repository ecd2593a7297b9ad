from jaxml.models.attention import dot_product_attention  # noqa: F401
from jaxml.models.mlp_denoiser import MLPDenoiser  # noqa: F401
from jaxml.models.unet import UNET_CONFIGS, UNet, unet_config  # noqa: F401
