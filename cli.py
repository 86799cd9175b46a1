"""signstream command line: `python cli.py --help` (also installed as `signstream`)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Real-time ASL recognition over Socket.IO."
)


def _fail(message: str) -> None:
    typer.echo(f"signstream: error: {message}", err=True)
    raise typer.Exit(2)


def _settings() -> Any:
    from service.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        _fail(str(exc))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes (each loads the model).")] = 1,
) -> None:
    """Serve the model over HTTP and Socket.IO (settings from the environment and .env)."""
    import uvicorn

    from service.engine import ModelError, check_model_files, choose_providers
    from service.logs import configure_logging

    settings = _settings()
    try:
        check_model_files(settings.model_path)
        choose_providers(settings.execution_provider)
    except ModelError as exc:
        _fail(str(exc))
    configure_logging(settings.log_level)
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
        try:
            report = run_convert(
                h5, out, clips or DEFAULT_CLIPS, progress=lambda m: (status.update(m), console.log(m))
            )
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
    from service.engine import ModelError, load_recognizer
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


if __name__ == "__main__":
    app()
