"""The studio example: a tiny SDXL-like generator whose LoRA modelcache swaps in place.

python -m examples.studio.adapters /tmp/lora-v1 --seed 1 --rank 8   # make a version
python -m examples.studio --port 8000 --model studio/sdxl --root /var/lib/modelcache
"""

from examples.studio.model import StudioConfig, apply_adapter, build_model, generate, image_sha256
from examples.studio.server import Generation, Studio, StudioServer

__all__ = [
    "Generation",
    "Studio",
    "StudioConfig",
    "StudioServer",
    "apply_adapter",
    "build_model",
    "generate",
    "image_sha256",
]
