"""L1: GPU-resident LoRA hot reload inside inference pods (extra `[runtime]`: torch).

    model = build_model().to("cuda")              # LoraLinear layers, see `add_lora`
    runtime = LoraRuntime(model, RuntimeConfig(model="studio/garment-lora", root=ROOT))
    ReloadServer(ReloadService([runtime]), port=8000).start()   # the agent calls it
    with runtime.request() as version:            # one version for the whole request
        image = model(...)

PEFT models (`get_peft_model`) work the same way; a diffusers pipeline with a LoRA from
`pipe.load_lora_weights(...)` through `LoraRuntime.for_pipeline(pipe, config)`.

Contract: slots are allocated once at `max_rank` when the runtime is built; a swap reads
the version's safetensors (sha256 from its manifest), validates every key, shape, dtype
and setting, stages it in (pinned) host memory and copies it into the same tensors at a
request boundary; on any failure the live version and weights stay as they were.
"""

from modelcache.runtime.controller import SwapController
from modelcache.runtime.diffusers_pipeline import diffusers_keys
from modelcache.runtime.endpoint import ReloadServer, ReloadService, asgi_app
from modelcache.runtime.errors import SwapRefused, TornWeightsError
from modelcache.runtime.lora import LoraLinear, add_lora
from modelcache.runtime.plan import AdapterPlan, KeyMap, make_plan, peft_keys
from modelcache.runtime.runtime import LoraRuntime, RuntimeConfig, SwapResult
from modelcache.runtime.safetensors_format import write_safetensors
from modelcache.runtime.settings import AdapterSettings
from modelcache.runtime.slots import LoraSlots
from modelcache.runtime.watch import CurrentWatcher, watch_current

__all__ = [
    "AdapterPlan",
    "AdapterSettings",
    "CurrentWatcher",
    "KeyMap",
    "LoraLinear",
    "LoraRuntime",
    "LoraSlots",
    "ReloadServer",
    "ReloadService",
    "RuntimeConfig",
    "SwapController",
    "SwapRefused",
    "SwapResult",
    "TornWeightsError",
    "add_lora",
    "asgi_app",
    "diffusers_keys",
    "make_plan",
    "peft_keys",
    "watch_current",
    "write_safetensors",
]
