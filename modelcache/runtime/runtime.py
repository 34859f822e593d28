"""`LoraRuntime`: one model's resident LoRA, its swap pipeline and its request boundary.

A swap is read (manifest, header, settings) -> validate (every key, shape, dtype,
setting against the slots) -> stage (the file into the host mirror, hashed on the way)
-> verify (sha256 against the manifest) -> swap (at the request boundary: drain, copy,
switch). Everything before the swap touches only the mirror, so any refusal leaves the
live weights and version as they were. Swaps are serialised: one mirror, one writer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from torch import nn

from modelcache.api import ReloadAnswer
from modelcache.runtime.bindings import LayerBinding
from modelcache.runtime.controller import SwapController
from modelcache.runtime.errors import SwapRefused, TornWeightsError
from modelcache.runtime.events import Loaded, Refused, Torn
from modelcache.runtime.metrics import RuntimeMetrics
from modelcache.runtime.plan import AdapterPlan, KeyMap, make_plan, peft_keys
from modelcache.runtime.safetensors_format import read_header
from modelcache.runtime.settings import (
    LayerSettings,
    SettingsReader,
    settings_from_config,
    settings_from_metadata,
)
from modelcache.runtime.slots import LoraSlots
from modelcache.runtime.source import ADAPTER_CONFIG, current_directory, open_version
from modelcache.runtime.staging import Staging

log = logging.getLogger(__name__)


StrPath = str | os.PathLike[str]
"""A path as callers hold it: a str or a `Path`; made a `Path` on entry."""


@dataclass(frozen=True, init=False)
class RuntimeConfig:
    """How a runtime finds and checks its adapter.

    `model` is the name the agent uses in reload calls ("<namespace>/<name>");
    `adapter_file` the weights' path in the version (None: the one .safetensors listed);
    `root` is the node's cache (the hostPath, mounted read-only; a str or a path): a
    reload call loads what its `current` names for `model`, never a caller's path; a
    reload endpoint requires it (None: only in-process `swap` calls, e.g. tests)."""

    model: str
    adapter_file: str | None = None
    config_file: str = ADAPTER_CONFIG
    root: Path | None = None
    drain_timeout_s: float = 120.0
    pin_memory: bool | None = None  # None: pin when the slots are on a GPU
    key_map: KeyMap = field(default=peft_keys)

    def __init__(
        self,
        model: str,
        *,
        adapter_file: str | None = None,
        config_file: str = ADAPTER_CONFIG,
        root: StrPath | None = None,
        drain_timeout_s: float = 120.0,
        pin_memory: bool | None = None,
        key_map: KeyMap = peft_keys,
    ) -> None:
        """Written out so that `root` takes a str as well as a path (the dataclass's own
        `__init__` would keep a str, and every reload would fail on it)."""
        fields = {
            "model": model,
            "adapter_file": adapter_file,
            "config_file": config_file,
            "root": None if root is None else Path(root),
            "drain_timeout_s": drain_timeout_s,
            "pin_memory": pin_memory,
            "key_map": key_map,
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class SwapResult:
    model: str
    version: str
    previous: str | None
    path: Path  # the resolved version directory
    bytes: int
    timings: dict[str, float]
    unchanged: bool = False

    def answer(self) -> ReloadAnswer:
        """The reload call's answer: this version is live."""
        return ReloadAnswer(
            ok=True,
            model=self.model,
            live_version=self.version,
            previous_version=self.previous,
            path=str(self.path),
            bytes=self.bytes,
            unchanged=self.unchanged,
            timings=self.timings,
        )


class LoraRuntime:
    """Build once the model is on its device: `runtime = LoraRuntime(model, RuntimeConfig(...))`.

    Serve with `with runtime.request() as version: ...`; swap with `runtime.swap(v, path)`
    (or the reload endpoint, or `watch_current`)."""

    def __init__(
        self,
        model: nn.Module,
        config: RuntimeConfig,
        *,
        registry: CollectorRegistry | None = None,
        bindings: Sequence[tuple[str, LayerBinding]] | None = None,
        settings_reader: SettingsReader | None = None,
    ) -> None:
        """`model` holds LoraLinear or PEFT LoRA Linear layers (a `get_peft_model` model
        included; slot names drop PEFT's `base_model.model.`). `bindings` replaces the
        discovery, `settings_reader` the adapter_config.json-then-metadata rule."""
        self.model = model
        self.pipeline: Any = None  # set by for_pipeline
        self.config = config
        self.slots = LoraSlots(model, bindings=bindings)
        self._read_settings: SettingsReader = settings_reader or self._settings
        pin = config.pin_memory
        if pin is None:
            pin = self.slots.device.type == "cuda"
        self.staging = Staging(self.slots.layout, pin=pin)
        self.controller = SwapController(drain_timeout_s=config.drain_timeout_s)
        self.metrics = RuntimeMetrics(registry)
        self._swap_lock = threading.Lock()
        self._in_flight = self.metrics.in_flight.labels(config.model)
        self._live_path: Path | None = None

    @classmethod
    def for_pipeline(
        cls,
        pipeline: Any,
        config: RuntimeConfig,
        *,
        components: Sequence[str] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> LoraRuntime:
        """A runtime over a diffusers pipeline's LoRA, as `pipe.load_lora_weights` put it.

        Slots are named `<component>.<module>` (`unet.down_blocks.0...to_q`), the keys
        diffusers' `save_lora_weights` writes; `components` limits which are searched
        (default: every torch module of `pipeline.components` holding LoRA layers).
        Settings come from the file's `lora_adapter_metadata`, else adapter_config.json;
        see `modelcache.runtime.diffusers_pipeline`."""
        from modelcache.runtime import diffusers_pipeline as dp  # noqa: PLC0415

        modules = dp.pipeline_modules(pipeline, components)
        if config.key_map is peft_keys:
            config = replace(config, key_map=dp.diffusers_keys)
        reader = dp.settings_reader(config.config_file)
        runtime = cls(modules, config, registry=registry, settings_reader=reader)
        runtime.pipeline = pipeline
        return runtime

    @property
    def name(self) -> str:
        return self.config.model

    @property
    def live_version(self) -> str | None:
        return self.controller.live_version

    @contextmanager
    def request(self) -> Iterator[str | None]:
        """Run one request (or one whole generation) on one version; yields that version."""
        with self.controller.request() as version, self._in_flight.track_inprogress():
            yield version

    @asynccontextmanager
    async def request_async(self) -> AsyncIterator[str | None]:
        """`request()` for asyncio code (waits for a swap without blocking the loop)."""
        async with self.controller.request_async() as version:
            with self._in_flight.track_inprogress():
                yield version

    def swap(self, version: str, path: StrPath) -> SwapResult:
        """Make `version` (the directory `path`, a str or a path) live, or raise SwapRefused
        and change nothing.

        TornWeightsError if the copy itself failed partway (see `SwapController.exclusive`)."""
        try:
            with self._swap_lock:
                result = self._swap(version, Path(path))
        except TornWeightsError as torn:
            self.metrics.failures.labels(self.name, "torn").inc()
            self.metrics.set_live(self.name, None)
            Torn(model=self.name, version=version, error=str(torn)).log(log)
            raise
        except SwapRefused as refusal:
            self.metrics.failures.labels(self.name, refusal.kind).inc()
            Refused(
                model=self.name,
                version=version,
                refusal=refusal.kind,
                reason=refusal.reason,
                live_version=self.live_version,
            ).log(log)
            raise
        if not result.unchanged:
            self.metrics.swaps.labels(self.name).inc()
            for phase, seconds in result.timings.items():
                self.metrics.seconds.labels(self.name, phase.removesuffix("_s")).observe(seconds)
            self.metrics.set_live(self.name, version)
            Loaded(
                model=self.name,
                version=version,
                device=str(self.slots.device),
                bytes=result.bytes,
                seconds=result.timings["total_s"],
                swap_seconds=result.timings["swap_s"],
            ).log(log)
        return result

    def reload_current(self) -> SwapResult:
        """Load what the node's `current` names for this model (under `config.root`): what
        a reload call does, whatever the caller asked. Unchanged when already live."""
        if self.config.root is None:
            raise SwapRefused("config", "RuntimeConfig.root is not set: no `current` to read")
        version, directory = current_directory(self.config.root, self.name)
        return self.swap(version, directory)

    def _swap(self, version: str, path: Path) -> SwapResult:
        started = time.perf_counter()
        config = self.config
        files = open_version(
            path,
            version=version,
            adapter_file=config.adapter_file,
            config_file=config.config_file,
            root=config.root,
        )
        previous = self.live_version
        if previous == version and self._live_path == files.directory:
            return SwapResult(self.name, version, previous, files.directory, 0, {}, True)
        where = str(files.adapter)
        try:
            with files.adapter.open("rb", buffering=0) as handle:
                header = read_header(handle, files.adapter_entry.size, where=where)
                settings = self._read_settings(files.config, header.metadata, files.directory)
                read_done = time.perf_counter()
                plan = make_plan(
                    header, settings, self.slots.slots, where=where, key_map=config.key_map
                )
                validated = time.perf_counter()
                filled = self.staging.fill(handle, header, plan, where=where)
        except OSError as error:
            raise SwapRefused("io", f"reading {where}: {error}") from None
        staged = time.perf_counter()
        if filled.digest.sha256 != files.adapter_entry.sha256:
            raise SwapRefused(
                "checksum",
                f"{where}: sha256 {filled.digest.sha256} does not match the manifest's "
                f"{files.adapter_entry.sha256}",
            )
        copy_started = time.perf_counter()
        drain_s = self.controller.exclusive(version, lambda: self._go_live(plan))
        done = time.perf_counter()
        self._live_path = files.directory
        timings = {
            "read_s": read_done - started,
            "verify_s": validated - read_done + filled.hash_s,
            "stage_s": staged - validated - filled.hash_s,
            "swap_s": done - copy_started,
            "drain_s": drain_s,
            "total_s": done - started,
        }
        return SwapResult(
            self.name, version, previous, files.directory, files.adapter_entry.size, timings
        )

    def _go_live(self, plan: AdapterPlan) -> None:
        """Inside the request boundary: the copy, then the state layers keep outside the
        slots (a PEFT layer's scale), so no request sees new weights with an old scale."""
        self.slots.load(self.staging.flats, self.staging.scales)
        self.slots.settle(plan)

    def _settings(
        self, config: bytes | None, metadata: Mapping[str, str], directory: Path
    ) -> LayerSettings:
        if config is not None:
            return settings_from_config(config, where=str(directory / self.config.config_file))
        if metadata:
            return settings_from_metadata(metadata, where=f"{directory} (safetensors metadata)")
        raise SwapRefused(
            "settings",
            f"{directory}: no {self.config.config_file} in the manifest and no adapter "
            "settings in the safetensors metadata",
        )
