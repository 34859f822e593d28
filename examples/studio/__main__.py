"""`python -m examples.studio --port 8000 --model studio/sdxl --root /var/lib/modelcache`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import torch

from examples.studio.model import StudioConfig
from examples.studio.server import Studio, StudioServer
from modelcache.api import DEFAULT_ROOT, ROOT_ENV

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
log = logging.getLogger("examples.studio")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.studio",
        description="A tiny SDXL-like image service whose LoRA modelcache swaps in place.",
    )
    parser.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")  # noqa: S104
    parser.add_argument("--port", type=int, default=8000, help="listen port (default 8000)")
    parser.add_argument(
        "--model", default="studio/sdxl", help="the name the agent reloads (<namespace>/<name>)"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get(ROOT_ENV, DEFAULT_ROOT)),
        help="the L2 cache root; reload paths must lie inside it "
        f"(default ${ROOT_ENV} or {DEFAULT_ROOT})",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--config", type=Path, help="a JSON file of StudioConfig fields")
    parser.add_argument(
        "--watch-current",
        nargs="?",
        const="",
        metavar="PATH",
        help="follow a `current` symlink (or the model directory holding it) instead of "
        "waiting for reload calls; alone, follows <root>/models/<model>/current",
    )
    parser.add_argument(
        "--allow-base", action="store_true", help="serve the base model before any LoRA is live"
    )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def current_link(args: argparse.Namespace) -> Path:
    if args.watch_current == "":
        model: str = args.model
        return Path(args.root) / "models" / model / "current"
    path = Path(args.watch_current)
    return path if path.name == "current" else path / "current"


def check_device(device: str) -> str | None:
    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        return f"--device {device!r}: {error}"
    if parsed.type == "cuda" and not torch.cuda.is_available():
        return f"--device {device}: torch {torch.__version__} sees no CUDA device"
    if parsed.type not in ("cpu", "cuda"):
        return f"--device {device}: only cpu and cuda are supported"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(message)s", stream=sys.stdout)
    error = check_device(args.device)
    if "/" not in args.model:
        error = f"--model {args.model!r}: expected <namespace>/<name>, e.g. studio/sdxl"
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        config = StudioConfig.from_file(args.config) if args.config else StudioConfig()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    studio = Studio(
        config,
        model_name=args.model,
        root=Path(args.root).resolve(),
        device=args.device,
        dtype=DTYPES[args.dtype],
        allow_base=args.allow_base,
    )
    try:
        server = StudioServer(studio, host=args.host, port=args.port)
    except OSError as error:
        print(f"error: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 2
    if args.watch_current is not None:
        link = current_link(args)
        studio.watch(link)
        log.info("studio: following %s (live: %s)", link, studio.live_version)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "studio: serving %s on %s (device %s, %s, LoRA slots rank %d on %s); reload route %s",
        studio.name,
        server.url(),
        args.device,
        args.dtype,
        config.max_rank,
        ",".join(config.targets),
        server.url("/modelcache/reload"),
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if studio.watcher is not None:
            studio.watcher.stop()
        log.info("studio: stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
