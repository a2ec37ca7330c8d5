"""`raq`: the command line. Click commands only; the work happens in the library.

Exit codes: 0 ok; 1 bad input or failure, with a one-line message on stderr (a traceback only with --debug).
"""
from __future__ import annotations

import atexit
import json
import os
import sys
import time
import warnings
from pathlib import Path

import click

from raqcodec.allocator import keep_freed_memory
from raqcodec.errors import CodecError


class RaqGroup(click.Group):
    """Turns CodecError and ordinary failures into a one-line message and exit 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(1)
        except BrokenPipeError:  # the reader of the output left (`raq info x.raq | head -1`): stop quietly
            _silence_stdout()
            sys.exit(1)
        except Exception as exc:  # every failure reaches the user as one line
            if ctx.obj and ctx.obj.get("debug"):
                raise
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            click.echo(f"error: {message}", err=True)
            sys.exit(1)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises no second BrokenPipeError."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a test runner's buffer)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _warn_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {message}", err=True)


@click.group(cls=RaqGroup)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """raqcodec: a neural image codec with rate-adaptive quantisation."""
    ctx.obj = {"debug": debug}
    warnings.showwarning = _warn_one_line


model_option = click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
                            help="Model file (default: the shipped model).")
device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
force_option = click.option("--force", is_flag=True, help="Overwrite existing outputs.")


def _pairs(src: Path, dst: Path, suffix: str) -> list[tuple[Path, Path]]:
    """(input, output) pairs: one file, or every image/.raq file of a folder into an output folder."""
    if not src.exists():
        raise CodecError(f"no such file or folder: {src}")
    if src.is_dir():
        from raqcodec.data import IMAGE_SUFFIXES  # imports torch: only for a folder of images to compress

        wanted = IMAGE_SUFFIXES if suffix == ".raq" else {".raq"}
        files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in wanted)
        if not files:
            raise CodecError(f"no input files in folder {src}")
        dst.mkdir(parents=True, exist_ok=True)
        return [(p, dst / (p.stem + suffix)) for p in files]
    return [(src, dst)]


STDIO = Path("-")
"""SOURCE or OUTPUT "-": standard input or output (one image, binary)."""


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--bpp", type=float, default=None, help="Target bits per pixel of the whole file.")
@click.option("--codebook-size", default=None,
              help="Fixed setting: an eK (stage 1 alone), or one eK per stage joined by '+', e.g. 4096+64.")
@click.option("--psnr", type=float, default=None,
              help="Quality target in dB: the smallest file whose decoded PSNR reaches it.")
@model_option
@device_option
@force_option
@click.option("--workers", default=1, show_default=True, help="Worker processes for a folder.")
@click.option("--dask", "dask_address", default=None,
              help="Compress a folder on a Dask cluster: a scheduler address, or local:N for N local workers. "
                   "Existing outputs are skipped (a restarted job resumes) unless --force.")
def compress(source: Path, output: Path, bpp: float | None, codebook_size: str | None, psnr: float | None,
             model_path: str | None, device: str, force: bool, workers: int, dask_address: str | None) -> None:
    """Compress an image (or a folder of images) to .raq. SOURCE and OUTPUT may be - (stdin / stdout)."""
    from raqcodec.batch import Job, compress_many
    from raqcodec.codec import as_setting, get_model

    if sum(arg is not None for arg in (bpp, codebook_size, psnr)) != 1:
        raise CodecError("give exactly one of --bpp, --codebook-size or --psnr")
    if codebook_size is not None:
        as_setting(codebook_size)  # a clear error before any model is loaded
    model = get_model(model_path, device)
    if STDIO in (source, output):
        _compress_stream(source, output, model, force, bpp=bpp, codebook_size=codebook_size, psnr=psnr)
        return
    pairs = _pairs(source, output, ".raq")
    jobs = [Job(str(src), str(dst), bpp, codebook_size, psnr, force) for src, dst in pairs]
    if dask_address is None:
        _report(compress_many(jobs, model, model_path, device, workers if len(jobs) > 1 else 1), len(jobs))
        return
    from raqcodec.cluster import compress_on_cluster, connect, pending

    jobs, skipped = pending(jobs)
    click.echo(f"{len(jobs)} to compress, {skipped} already done", err=True)
    client = connect(dask_address)
    try:
        _report(compress_on_cluster(client, jobs, model_path, device), len(jobs))
    finally:
        client.close()


def _report(results, count: int) -> None:
    """One line per compressed image (a progress bar for several); CodecError when any failed."""
    from tqdm import tqdm

    failures = 0
    for res in tqdm(results, total=count, desc="compress", disable=count <= 1, file=sys.stderr):
        name = Path(res.source).name
        if res.error is not None:
            if count == 1:
                raise CodecError(res.error)
            failures += 1
            click.echo(f"error: {name}: {res.error}", err=True)
            continue
        click.echo(f"{name}: eK={res.setting} bytes={res.nbytes} bpp={res.bpp:.4f} time={res.seconds:.2f}s")
    if failures:
        raise CodecError(f"{failures} of {count} images failed")


def _compress_stream(source: Path, output: Path, model, force: bool, **target) -> None:
    """One image from a file or stdin to a file or stdout; the status line goes to stderr."""
    from raqcodec.codec import encode, setting_label
    from raqcodec.image_io import open_image_bytes

    start = time.perf_counter()
    image = open_image_bytes(sys.stdin.buffer.read()) if source == STDIO else source
    enc = encode(image, model=model, **target)
    _write_output(enc.data, output, force)
    name = "<stdin>" if source == STDIO else source.name
    click.echo(f"{name}: eK={setting_label(enc.setting)} bytes={len(enc.data)} bpp={enc.bpp:.4f} "
               f"time={time.perf_counter() - start:.2f}s", err=True)


def _write_output(data: bytes, output: Path, force: bool) -> None:
    """data to stdout (output "-") or atomically to a file."""
    from raqcodec.image_io import write_bytes_atomic

    if output == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_bytes_atomic(data, output, force=force)


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@model_option
@device_option
@force_option
@click.option("--exact", is_flag=True,
              help="Decode in float64: the same pixels on every machine and device, about 3-4x slower on a CPU.")
def decompress(source: Path, output: Path, model_path: str | None, device: str, force: bool, exact: bool) -> None:
    """Decompress a .raq file (or a folder of them) to an image (PNG unless the extension says otherwise).
    SOURCE and OUTPUT may be - (stdin / stdout; PNG on stdout)."""
    from raqcodec.image_io import png_bytes, save_image_atomic

    stdio = STDIO in (source, output)
    pairs = [] if stdio else _pairs(source, output, ".png")
    if stdio:
        start = time.perf_counter()
        data = sys.stdin.buffer.read() if source == STDIO else _read(source)
        image = _decoder(model_path, device, exact, one_file=True)(data)
        if output == STDIO:
            _write_output(png_bytes(image), output, force)
        else:
            save_image_atomic(image, output, force=force)
        name = "<stdin>" if source == STDIO else source.name
        click.echo(f"{name}: {image.width}x{image.height} time={time.perf_counter() - start:.2f}s", err=True)
        return
    decode = _decoder(model_path, device, exact, one_file=len(pairs) == 1)
    if len(pairs) > 1:  # a progress bar for a folder (tqdm takes 0.05 s to import)
        from tqdm import tqdm

        pairs = tqdm(pairs, desc="decompress", file=sys.stderr)
    for src, dst in pairs:
        start = time.perf_counter()
        image = decode(_read(src))
        save_image_atomic(image, dst, force=force)
        click.echo(f"{src.name}: {image.width}x{image.height} time={time.perf_counter() - start:.2f}s")


def _decoder(model_path: str | None, device: str, exact: bool, one_file: bool):
    """A function .raq bytes -> PIL image for `raq decompress`.

    One file decoded on the CPU without --exact goes to the numpy decoder (numpy_decoder.py), so the command
    never imports torch (3 s or more on the 2-core machine). Whole commands there (2026-11-27, 2 runs each):
    a 2560x1920 image 8.2 to 8.9 s against 10.0 to 11.2 s with torch, a 4000x3000 one 19.8 to 21.6 s against
    21.4 to 22.4 s, at 0.37 against 1.1 GB and 0.58 against 1.3 GB of peak memory. Its pixels may differ from
    the torch decoder's by one level of 255 (docs/FORMAT.md, Conformance). Torch decodes otherwise: --exact,
    --device cuda, auto where a GPU driver is present, a model the numpy decoder does not implement, and a
    folder of files, where torch's faster layers (0.69 to 1.02 s/MP against 0.98 to 1.44 on Kodak and the
    photos, model loaded: benchmarks/numpy_decoder_speed.py) repay its start-up.
    """
    from raqcodec.numpy_decoder import NumpyDecoder, cuda_may_be_present

    if one_file and not exact and (device == "cpu" or (device == "auto" and not cuda_may_be_present())):
        decoder = NumpyDecoder.load(model_path)
        if decoder is not None:
            return decoder.decompress
    from raqcodec.codec import decompress, get_model

    model = get_model(model_path, device)
    return lambda data: decompress(data, model=model, exact=exact)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise CodecError(f"is a folder, not a .raq file: {path}") from None
    except OSError as exc:
        raise CodecError(f"cannot read {path}: {exc.strerror}") from None


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
def info(source: Path) -> None:
    """Print the header fields of a .raq file and its achieved bpp."""
    from raqcodec.bitstream import read_header

    data = _read(source)
    header = read_header(data)
    fields = {"version": header.version, "stages": header.stages}
    fields.update((k, v.hex() if isinstance(v, bytes) else v) for k, v in header.__dict__.items())
    fields.update(file_bytes=len(data), bpp=round(len(data) * 8 / (header.width * header.height), 6))
    for key, value in fields.items():
        click.echo(f"{key}: {value}")


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Model file to write.")
@click.option("--config", default=None,
              help="Named model configuration (default: 'default', or the --init file's own configuration).")
@click.option("--val", "val_source", default=None, help="Validation image folder.")
@click.option("--steps", default=100_000, show_default=True)
@click.option("--minutes", default=float("inf"), type=float, help="Wall-clock budget of this run.")
@click.option("--batch", default=16, show_default=True)
@click.option("--crop", default=64, show_default=True)
@click.option("--lr", default=2e-4, show_default=True)
@click.option("--lr-end", type=float, default=None, help="Cosine-decay the learning rate to this over the run.")
@click.option("--seed", default=0, show_default=True)
@click.option("--checkpoint-minutes", default=5.0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from OUT's .ckpt checkpoint when it exists.")
@click.option("--init", default=None, help="Start from a model file's weights (e.g. the shipped model).")
@click.option("--split", default="train", show_default=True, help="Split of a CIFAR-10 zip source.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", default=0, help="torch CPU threads (0: torch's default).")
def train(sources, out, config, val_source, steps, minutes, batch, crop, lr, lr_end, seed, checkpoint_minutes,
          resume, init, split, device, threads) -> None:
    """Train a RAQ-VAE on image folders or the CIFAR-10 zip (SOURCES), writing a model file."""
    import torch

    from raqcodec.distributed import is_rank_zero
    from raqcodec.modelfile import resolve_device
    from raqcodec.train import TrainOptions, train as run

    if threads:
        torch.set_num_threads(threads)
    run(TrainOptions(sources=list(sources), out=out, config=config, val_source=val_source, steps=steps,
                     minutes=minutes, batch=batch, crop=crop, lr=lr, lr_end=lr_end, seed=seed,
                     checkpoint_minutes=checkpoint_minutes,
                     resume=resume, init=init, device=str(resolve_device(device)), split=split))
    if is_rank_zero():  # under torchrun only rank 0 writes
        click.echo(f"wrote {out}")


@main.command("eval")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@model_option
@click.option("--codebook-sizes", default=None,
              help="Settings, comma-separated: an eK (stage 1 alone) or eK+eK+... per stage "
                   "(default: the raq rd sweep along the model's rate ladder).")
@click.option("--method", type=click.Choice(["data", "model"]), default="data", show_default=True,
              help="data: the Seq2Seq generator; model: DKM/IKM on the base codebook.")
@click.option("--limit", type=int, default=None, help="Only the first N images.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
@device_option
def evaluate_cmd(folder, model_path, codebook_sizes, method, limit, json_out, device) -> None:
    """PSNR, MS-SSIM, bpp, perplexity and usage per codebook size over an image folder."""
    from raqcodec.codec import as_setting, check_setting, get_model
    from raqcodec.evaluate import evaluate, markdown_table
    from raqcodec.rd import ladder_sweep

    model = get_model(model_path, device)
    settings = ladder_sweep(model) if codebook_sizes is None else \
        [as_setting(s.strip()) for s in codebook_sizes.split(",") if s.strip()]
    for setting in settings:
        check_setting(model, setting)
    results = evaluate(model, folder, settings, limit=limit, method=method)
    click.echo(markdown_table(results))
    if json_out:
        doc = {"model": str(model_path or "default"), "dataset": str(folder), "method": method,
               "results": [r.to_json() for r in results]}
        Path(json_out).write_text(json.dumps(doc, indent=2) + "\n")


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--bpp", type=float, required=True, help="raqcodec's bpp target; the others match its file size.")
@click.option("--out", "out_png", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Picture to write (PNG).")
@click.option("--codecs", default="jpeg,webp,avif,jxl,heic", show_default=True,
              help="Other codecs, comma-separated (jxl and heic need the 'baselines' extra; skipped without it).")
@model_option
@device_option
@force_option
def compare(image: Path, bpp: float, out_png: Path, codecs: str, model_path: str | None, device: str,
            force: bool) -> None:
    """One picture of IMAGE coded by raqcodec and each codec at the same file size, with a zoomed detail."""
    from raqcodec.compare import run_compare
    from raqcodec.rd import split_list

    for panel in run_compare(image, bpp, out_png, split_list(codecs, "--codecs"), model=model_path,
                             device=device, force=force)[1:]:
        click.echo(f"{panel.name}: bpp={panel.bpp:.4f} psnr={panel.psnr_db:.2f} dB")
    click.echo(f"wrote {out_png}")


@main.command("rd")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--out", "out_png", type=click.Path(dir_okay=False), default=None, help="Plot to write (PNG).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Curves and BD table (JSON).")
@click.option("--model", "model_paths", multiple=True, type=click.Path(dir_okay=False),
              help="Model file for the raq curve; repeat for one curve per model (default: the shipped model).")
@click.option("--codecs", default="raq,jpeg,webp,avif,jxl,heic", show_default=True,
              help="Codecs to measure, comma-separated: raq (rate control at each --targets bpp), raq-nearest "
                   "(the format-1 coder over the rate ladder), jpeg, webp, avif, jxl, heic (jxl and heic need the "
                   "'baselines' extra; skipped with a warning without it).")
@click.option("--anchors", "anchor_paths", multiple=True, type=click.Path(dir_okay=False),
              help="Published curve (CompressAI JSON); repeat for several.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N images by name.")
@click.option("--reference", default="jpeg", show_default=True, help="Curve the BD metrics are measured against.")
@click.option("--codebook-sizes", default=None,
              help="eK sweep of the raq curves along every stage of the rate ladder, comma-separated "
                   "(default: 2..4096 in 17 steps), clipped to each model's range; eK+eK items are exact settings.")
@click.option("--targets", default=None,
              help="bpp targets of the raq curves, comma-separated (default: 0.06..1.5 in 16 steps).")
@device_option
def rd_cmd(folder, out_png, json_out, model_paths, codecs, anchor_paths, limit, reference, codebook_sizes,
           targets, device) -> None:
    """Rate-distortion curves (PSNR and MS-SSIM vs bpp) of raqcodec and Pillow codecs, BD table and plot."""
    from raqcodec.rd import RAQ_SIZES, RAQ_TARGETS, parse_sizes, parse_targets, run_rd, split_list

    sizes = RAQ_SIZES if codebook_sizes is None else parse_sizes(codebook_sizes)
    bpp_targets = RAQ_TARGETS if targets is None else parse_targets(targets)
    result = run_rd(folder, models=model_paths, codecs=split_list(codecs, "--codecs"),
                    anchors=anchor_paths, limit=limit, reference=reference, sizes=sizes, targets=bpp_targets,
                    device=device, out_png=out_png, out_json=json_out)
    click.echo(result.markdown())


def run() -> None:
    """The `raq` executable: main() with freed memory kept for reuse (allocator.py), then exit without tearing the
    interpreter down.

    Once torch is imported, Python's teardown at exit takes about 0.5 s on the 2-core CPU (`import torch` then
    exit: median 2.05 s, against 1.48 s with os._exit; 10 runs each). Every output is complete by then (files
    are written to a temporary name, closed and renamed), so after main() this runs the atexit handlers,
    flushes stdout and stderr and leaves with main's exit code.
    """
    keep_freed_memory()
    try:
        main()
        code = 0
    except SystemExit as exc:  # click ends every command with one
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    atexit._run_exitfuncs()  # CPython's own call at exit: a Dask cluster or worker pool still closes
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach the reader
            code = code or 1
    os._exit(code)


if __name__ == "__main__":
    run()
