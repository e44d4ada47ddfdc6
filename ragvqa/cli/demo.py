"""``ragvqa demo``: serve the Gradio demo page over a knowledge base.

    ragvqa demo --kb data/kb/sample                       # offline profile, http://127.0.0.1:7860
    ragvqa demo --kb KB --profile paper --retriever ret2:PATH --generator-url http://gpu:8000/v1
    ragvqa demo --kb KB --host 0.0.0.0 --port 8080 --concurrency 8

Models load once, before the page is served; requests are queued (at most
``--concurrency`` answered at once, at most ``--queue-size`` waiting).
``--share`` (off by default) asks Gradio for a public link: read
docs/demo.md first. Heavy libraries are imported inside run().
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from ragvqa.cli.common import add_model_arguments, generator_config, progress_printer

AUTH_ENV = "RAGVQA_DEMO_AUTH"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = subparsers.add_parser(
        "demo",
        help="serve the web demo: upload a photo, ask, see the answer and its evidence",
        description="Serve the Gradio demo page: a photo and a question in, the short answer "
        "and the retrieved documents it came from out. Models load once at start.",
    )
    p.add_argument("--kb", type=Path, required=True, help="knowledge base directory (built and embedded)")
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--beams", type=int, help="default beam width on the page (paper: 3 for Qwen2.5-VL)")
    p.add_argument("--max-new-tokens", type=int, help="default answer length cap on the page (paper: 20)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="requests answered at once (default: 8 with a generator server, 1 for an in-process model)",
    )
    p.add_argument("--queue-size", type=int, default=64, help="requests that may wait in the queue (default 64)")
    p.add_argument(
        "--share",
        action="store_true",
        help="also publish the page on a public *.gradio.live link (off by default; anyone with the "
        f"link can use it: set {AUTH_ENV}=user:password, see docs/demo.md)",
    )
    p.set_defaults(func=run)


def _auth_from_env() -> tuple[str, str] | None:
    from ragvqa.errors import InputError

    value = os.environ.get(AUTH_ENV, "")
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise InputError(f"{AUTH_ENV} must look like user:password", hint=f"export {AUTH_ENV}=alice:long-secret")
    return user, password


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port in use before any model loads (seconds, not after the load)."""
    import socket

    from ragvqa.errors import InputError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise InputError(
                f"cannot serve on {host}:{port} ({exc.strerror or exc})",
                hint="pick another --port, or stop what is using it",
            ) from None


def run(args: argparse.Namespace) -> int:
    """Run ``ragvqa demo`` until Ctrl-C; returns the exit code."""
    from ragvqa.config import get_profile
    from ragvqa.errors import InputError, KnowledgeBaseError, require

    profile = get_profile(args.profile)
    # Cheap checks first, before any model loads.
    if not 1 <= args.port <= 65535:
        raise InputError(f"--port must be between 1 and 65535, not {args.port}")
    if args.concurrency is not None and not 1 <= args.concurrency <= 256:
        raise InputError(f"--concurrency must be between 1 and 256, not {args.concurrency}")
    if not 1 <= args.queue_size <= 10_000:
        raise InputError(f"--queue-size must be between 1 and 10000, not {args.queue_size}")
    if not args.kb.is_dir():
        raise KnowledgeBaseError(
            f"knowledge base directory not found: {args.kb}",
            hint="build one with: ragvqa build-kb --sample --out data/kb/sample --retriever visual:minilm",
        )
    auth = _auth_from_env()
    _check_port_free(args.host, args.port)
    gen_config = generator_config(profile, args)
    require("gradio", "demo")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    from ragvqa.app.demo import build_app, launch
    from ragvqa.pipeline import build_pipeline

    pipeline = build_pipeline(
        args.kb, profile, retriever_spec=args.retriever, generator_config=gen_config, progress=progress_printer(args)
    )
    print(f"Models loaded in {pipeline.load_seconds:.1f} s ({pipeline.generator_name}).", file=sys.stderr)
    concurrency = args.concurrency
    if concurrency is None:
        # A server batches many requests; an in-process model on one device gains nothing from more.
        concurrency = 8 if pipeline.profile.generator.backend == "openai" else 1
    if args.share:
        print(
            "WARNING: --share publishes this page on a public gradio.live URL: anyone with the link "
            "can send photos and questions and read the knowledge base's documents"
            + ("" if auth else f" (no login: set {AUTH_ENV}=user:password)")
            + ".",
            file=sys.stderr,
        )
    # The KB's folder name only: the page must not show the server's file system.
    app = build_app(pipeline, kb_label=Path(args.kb).resolve().name)
    try:
        try:
            launch(
                app,
                host=args.host,
                port=args.port,
                concurrency=concurrency,
                queue_size=args.queue_size,
                share=args.share,
                auth=auth,
                block=False,
                quiet=True,  # gradio's own hints name launch() arguments, not ours
            )
        except OSError as exc:
            raise InputError(
                f"cannot serve on {args.host}:{args.port} ({' '.join(str(exc).split())})",
                hint="pick another --port, or stop what is using it",
            ) from exc
        print(
            f"Serving the demo on {app.local_url} ({concurrency} at once, queue of {args.queue_size}); "
            "Ctrl-C stops it.",
            file=sys.stderr,
        )
        if args.share and getattr(app, "share_url", None):
            print(f"Public link: {app.share_url}", file=sys.stderr)
        # Ctrl-C (SIGINT) and SIGTERM both stop the demo, whatever handler a
        # library installed while the models loaded.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        while app.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stopped = _close_within([app.close, pipeline.close], CLOSE_TIMEOUT_S)
    print("Demo stopped." if stopped else
          f"Demo stopped (the web server had not closed its connections after {CLOSE_TIMEOUT_S:.0f} s; "
          "left to the exit).", file=sys.stderr)
    if not stopped:
        # A thread still blocked in the web server would hold the interpreter's exit.
        sys.stderr.flush()
        os._exit(0)
    return 0


#: Seconds the web server and the models get to shut down after Ctrl-C.
CLOSE_TIMEOUT_S = 15.0


def _close_within(closers: list, timeout_s: float) -> bool:
    """Run the shutdown calls in a daemon thread; False if they have not
    returned within ``timeout_s`` (e.g. a client keeps a connection open)."""
    import threading

    def close_all() -> None:
        for close in closers:
            close()

    worker = threading.Thread(target=close_all, name="ragvqa-demo-close", daemon=True)
    worker.start()
    worker.join(timeout_s)
    return not worker.is_alive()
