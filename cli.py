"""signstream command line: `python cli.py --help` (also installed as `signstream`)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Real-time ASL recognition over Socket.IO.")


def _fail(message: str) -> None:
    typer.echo(f"signstream: error: {message}", err=True)
    raise typer.Exit(2)


def _settings() -> Any:
    from service.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        _fail(str(exc))


def _check_port(host: str, port: int) -> None:
    """Fail with one line unless a server could listen on host:port (bound as uvicorn binds it)."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                _fail(f"port {port} is already in use on {host}: stop what listens there or choose another --port")
            _fail(f"cannot listen on {host} port {port}: {exc.strerror or exc}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes (each loads the model).")] = 1,
) -> None:
    """Serve the model over HTTP and Socket.IO (settings from the environment and .env)."""
    import logging

    import uvicorn

    from service.engine import check_model
    from service.logs import configure_logging
    from service.onnx_runtime import ModelError, choose_providers

    settings = _settings()
    _check_port(host, port)  # before the model is touched: a server that cannot listen must not load it
    try:
        check_model(settings)
        choose_providers(settings.execution_provider)
    except ModelError as exc:
        _fail(str(exc))
    configure_logging(settings.log_level, settings.log_format)
    if workers > 1:
        logging.getLogger("signstream").warning(
            "--workers %d shares one port without sticky routing: Socket.IO polling clients will fail; "
            "for several processes run one per port behind deploy/nginx.conf",
            workers,
        )
    uvicorn.run(
        "service.app:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level,
        log_config=None,
        # Long-polling clients hold a request open for up to the ping interval; don't wait for them.
        timeout_graceful_shutdown=settings.shutdown_timeout,
        # The transport's bound on one message, as for polling (a larger one is refused unread: 1009).
        ws_max_size=settings.max_message_bytes,
    )


@app.command()
def convert(
    h5: Annotated[Path | None, typer.Option(help="Keras h5 (default: MODEL_PATH).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: the h5's folder).")] = None,
    clips: Annotated[Path | None, typer.Option(help="Real clips <gloss>/*.mp4 for the parity check.")] = None,
) -> None:
    """Export the Keras model to encoder/head/full ONNX once, and check them against Keras."""
    from rich.console import Console

    console = Console(stderr=True)
    h5 = h5 or _settings().model_path
    if not h5.is_file():
        _fail(f"no h5 at {h5}")
    from convert.architecture import ArchitectureError
    from convert.keras_to_onnx import DEFAULT_CLIPS
    from convert.keras_to_onnx import convert as run_convert

    with console.status("converting") as status:

        def progress(message: str) -> None:
            status.update(message)
            console.log(message)

        try:
            report = run_convert(h5, out, clips or DEFAULT_CLIPS, progress=progress)
        except (ArchitectureError, FileNotFoundError) as exc:
            _fail(str(exc))
    parity = report["parity"]
    console.print(
        f"converted in {report['conversion_seconds']} s; on {parity['windows']} real windows: "
        f"max |ONNX - Keras| = {parity['max_abs_diff_full_vs_keras']:.2e}, "
        f"top-1 agreement {parity['top1_agreement_full_vs_keras']:.0%} (full), "
        f"{parity['top1_agreement_encoder_head_vs_keras']:.0%} (encoder+head)"
    )


@app.command()
def predict(
    clip: Annotated[Path, typer.Argument(help="A video file (mp4, gif, ...).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Stream a clip frame by frame through the server's stream state and engine (no network)."""
    from service.engine import load_recognizer
    from service.onnx_runtime import ModelError
    from service.streaming import stream_clip

    settings = _settings()
    try:
        recognizer = load_recognizer(settings)
    except ModelError as exc:
        _fail(str(exc))
    if not clip.is_file():
        _fail(f"no video at {clip}")
    result = asyncio.run(stream_clip(recognizer, settings, clip))
    if as_json:
        json.dump(result.as_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    for step in result.timeline:
        typer.echo(f"{step.time_s:7.2f}s  frame {step.frame:4d}  {step.label:<12} {step.score:.3f}")
    typer.echo(f"final: {result.label} ({result.score:.3f})")


@app.command()
def evaluate(
    folders: Annotated[list[Path] | None, typer.Argument(help="Folders of <gloss>/<clip> files.")] = None,
    manifest: Annotated[Path | None, typer.Option(help="A clip manifest CSV (gloss,path,...,split).")] = None,
    split: Annotated[str | None, typer.Option(help="Only manifest rows of this split (e.g. test).")] = None,
    root: Annotated[
        list[str] | None,
        typer.Option(help="NAME=DIR: where manifest paths NAME/... live (default: the catalogue's shared, found)."),
    ] = None,
    window_seconds: Annotated[float | None, typer.Option(help="Override WINDOW_SECONDS.")] = None,
    model: Annotated[str | None, typer.Option(help="Override MODEL (wlasl20c or landmarks).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full report here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a confusion-matrix PNG here.")] = None,
) -> None:
    """Stream real clips through the server's pipeline and report clip-level top-1/top-5."""
    import dataclasses

    from service.engine import load_recognizer
    from service.evaluation import clips_in_folder, clips_in_manifest, confusion_png
    from service.evaluation import evaluate as run_evaluate
    from service.onnx_runtime import ModelError

    settings = _settings()
    if window_seconds is not None:
        settings = dataclasses.replace(settings, window_seconds=window_seconds)
    if model is not None:
        if model not in ("wlasl20c", "landmarks"):
            _fail("--model must be wlasl20c or landmarks")
        settings = dataclasses.replace(settings, model=model)
    clips = [clip for folder in folders or [] for clip in clips_in_folder(folder)]
    if manifest is not None:
        from service.clips import DATA_ROOT
        from training.catalogue import FOUND_ROOT

        roots = {"shared": str(DATA_ROOT), "found": str(FOUND_ROOT)} | dict(item.split("=", 1) for item in root or [])
        try:
            clips += clips_in_manifest(manifest, {k: Path(v) for k, v in roots.items()}, split)
        except ValueError as exc:
            _fail(str(exc))
    if not clips:
        _fail("no clips: give folders of <gloss>/<clip> files or --manifest")
    missing = [str(c.path) for c in clips if not c.path.is_file()]
    if missing:
        _fail(f"{len(missing)} clips not found, e.g. {missing[0]}")
    try:
        recognizer = load_recognizer(settings)
    except ModelError as exc:
        _fail(str(exc))
    report = asyncio.run(run_evaluate(recognizer, settings, clips))
    for row in report["per_clip"]:
        mark = "ok " if row["predicted"] == row["gloss"] else "   "
        typer.echo(f"{mark}{row['gloss']:<11} -> {row['predicted']:<11} {row['score']:.3f}  {row['file']}")
    typer.echo(f"n={report['n']} top1={report['top1']:.3f} top5={report['top5']:.3f} window={settings.window_seconds}s")
    if json_out:
        json_out.write_text(json.dumps(report, indent=1) + "\n")
    if plot:
        confusion_png(report, recognizer.labels, plot)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def train(ctx: typer.Context) -> None:
    """Rebuild a shipped model (needs the convert extra): `train [--model wlasl20c|landmarks] [options]`;
    `train [--model ...] --help` lists the options."""
    from service.registry import RECOGNIZERS, load_object

    args = list(ctx.args)
    model = "wlasl20c"
    if "--model" in args:
        at = args.index("--model")
        model = args[at + 1] if at + 1 < len(args) else ""
        del args[at : at + 2]
    if model not in RECOGNIZERS:
        _fail(f"--model must be one of {', '.join(RECOGNIZERS)}")
    load_object(RECOGNIZERS[model].trainer)(args)


@app.command()
def loadtest(
    video: Annotated[Path, typer.Option(help="A clip, or a folder of clips, to stream.")],
    url: Annotated[str, typer.Option(help="Server URL.")] = "http://127.0.0.1:8000",
    clients: Annotated[int, typer.Option(help="Concurrent clients.")] = 1,
    fps: Annotated[float, typer.Option(help="Frames per second per client.")] = 25.0,
    seconds: Annotated[float, typer.Option(help="Streaming time per run.")] = 10.0,
    transport: Annotated[str, typer.Option(help="websocket or polling.")] = "websocket",
    binary: Annotated[bool, typer.Option(help="Send raw JPEG bytes instead of base64.")] = False,
    find_capacity: Annotated[bool, typer.Option(help="Raise clients until a run fails.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a latency/throughput chart (PNG) here.")] = None,
    results: Annotated[Path | None, typer.Option(help="Write a markdown report (benchmarks/RESULTS.md).")] = None,
) -> None:
    """Stream real clip frames from N Socket.IO clients and measure frame -> prediction latency."""
    import urllib.request

    from service.loadgen import browser_jpegs, held, run_load
    from service.loadreport import plot_runs, results_markdown

    if transport not in ("websocket", "polling"):
        _fail("--transport must be websocket or polling")
    frames = browser_jpegs(video)
    runs: list[dict[str, Any]] = []

    def measure(count: int) -> bool:
        result = asyncio.run(run_load(url, frames, count, fps, seconds, transport, binary))
        runs.append(result.as_dict())
        lat = result.latency_ms
        typer.echo(
            f"clients={count} sent={result.sent} replies={result.replies} lost={result.lost} "
            f"errors={result.errors} p50={lat.get('p50')} p95={lat.get('p95')} p99={lat.get('p99')} "
            f"max={lat.get('max')} ms held={result.held} server={result.server}"
        )
        return result.held

    count, last_held = clients, 0
    while measure(count) and find_capacity:
        last_held, count = count, (count * 2 if count < 8 else count + 4)
    while find_capacity and count - last_held > 1:  # then halve the gap between the last held and the first failed
        middle = (last_held + count) // 2
        last_held, count = (middle, count) if measure(middle) else (last_held, middle)
    runs.sort(key=lambda run: int(run["clients"]))
    output: dict[str, Any] = {"runs": runs}
    if find_capacity:
        holding = [r["clients"] for r in runs if held(r)]
        output["capacity"] = max(holding, default=0)
        typer.echo(f"capacity: {output['capacity']} clients at {fps} fps (p95 < 100 ms, no lost or stale replies)")
    if json_out:
        json_out.write_text(json.dumps(output, indent=1) + "\n")
    if plot:
        plot_runs(runs, plot)
    if results:
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:
            health = json.load(response)
        results.write_text(results_markdown(output, "signstream " + " ".join(sys.argv[1:]), health))


@app.command()
def client(
    video: Annotated[Path | None, typer.Option(help="A clip, or a folder of clips, to stream.")] = None,
    camera: Annotated[int | None, typer.Option(help="Stream this camera (OpenCV index).")] = None,
    url: Annotated[str, typer.Option(help="Server URL.")] = "http://127.0.0.1:8000",
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON line per event, no live view.")] = False,
    topk: Annotated[int, typer.Option(help="Ask for the k most probable labels (0 = off).")] = 3,
    fps: Annotated[
        float | None, typer.Option(help="Frames per second (default: the clip's own rate; 25 for a camera).")
    ] = None,
    max_in_flight: Annotated[
        int | None,
        typer.Option(help="Frames sent but not yet answered before the next one is skipped (default: 4, as the page)."),
    ] = None,
) -> None:
    """Stream a clip or a camera to a server like the browser page does; show labels, signs, latency."""
    from service.client import MAX_IN_FLIGHT, ClientConfig, ClientError, camera_frames, run_client, video_frames

    if (video is None) == (camera is None):
        _fail("give exactly one of --video FILE|DIR or --camera N")
    if topk < 0 or (fps is not None and fps <= 0) or (max_in_flight is not None and max_in_flight < 1):
        _fail("--topk must be >= 0, --fps > 0 and --max-in-flight >= 1")
    source = str(video) if video is not None else f"camera {camera}"
    try:
        frames = video_frames(video) if video is not None else camera_frames(camera or 0)
        config = ClientConfig(url=url, topk=topk, fps=fps, max_in_flight=max_in_flight or MAX_IN_FLIGHT)
        state = asyncio.run(run_client(frames, config, json_lines, source))
    except ClientError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if not json_lines:
        summary = state.summary()
        typer.echo(
            f"sent={summary['sent']} predictions={summary['predictions']} signs={summary['signs']} "
            f"latency p50={summary['latency_ms']['p50']} p95={summary['latency_ms']['p95']} ms"
        )


if __name__ == "__main__":
    app()
