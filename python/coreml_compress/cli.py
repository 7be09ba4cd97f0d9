"""The ``coreml-compress`` command line.

    coreml-compress info MODEL.mlpackage        the weights of a package, as a table
    coreml-compress demo [--out DIR] [--force]  write the built-in example package and show it
    coreml-compress decompress IN OUT           every constexpr_* chain back to a dense const
    coreml-compress palettize IN OUT --nbits 4 --granularity per-grouped-channel --group-size 16
    coreml-compress quantize IN OUT --dtype int4 --granularity per-block --block-size 32
    coreml-compress prune IN OUT --sparsity 0.5 | --n-m 2:4 | --threshold 1e-3
    coreml-compress merge OUT A.mlpackage B.mlpackage:main=adapter … --default NAME
                                                one multifunction package, equal weights shared
    coreml-compress extract IN FUNCTION OUT     one function back out as its own package
    coreml-compress fit IN OUT --max-size 2GB   per-weight forms chosen for the least error
                                                within a size; --report report.html
    coreml-compress lint MODEL --compute-units cpu_and_ne
                                                what will not run as intended there

Exit status (also in ``--help``): 0 when the asked work was done, 1 when it could not be (an
error prints one line on stderr), 2 for a usage error (argparse's), 3 when ``lint`` found an
error (or, with ``--strict``, a warning), 130 when interrupted.
An existing OUT is replaced only with --force, and only if it is a package.
coremltools is not needed, and not imported.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__, _native, optimize
from ._cli_compress import FORCE_HELP, UsageError, format_compression_report
from ._cli_compress import add_commands as add_compression_commands
from ._cli_fit import add_command as add_fit_command
from .config import OpPalettizerConfig, OptimizationConfig
from .errors import CoreMLCompressError
from .inspect import format_size, inspect
from .lint import COMPUTE_UNITS, Severity, format_messages, lint_package
from .multifunction import MultiFunctionDescriptor, extract_function, save_multifunction

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_USAGE = 2  # argparse's own status for usage errors (parser.error)
EXIT_FINDINGS = 3  # lint found what it was asked to fail on
EXIT_INTERRUPTED = 130  # the shell's status for a process ended by SIGINT

EXIT_STATUS_HELP = """exit status:
  0    the asked work was done
  1    it could not be: bad or unreadable input, a config or recipe with mistakes, an
       engine error (one line on stderr; nothing is written)
  2    usage error: an unknown command or option, a missing or malformed value
  3    lint: the package has an error finding (with --strict, also a warning)
  130  interrupted (Ctrl-C); temporary files are removed"""


def _info(args: argparse.Namespace) -> int:
    print(inspect(args.path))
    return 0


# What `demo` does to the example package before showing it: (label, transform(src, dest) -> path)
# or None to show the example as written. Palettization slots in here as a one-line change, e.g.
# ("palettized to 4 bits", lambda src, dest: optimize.palettize_weights(src, cfg, output_path=dest)).
def _palettize_demo(src: Path, dest: Path) -> object:
    config = OptimizationConfig(
        global_config=OpPalettizerConfig(nbits=4, granularity="per_grouped_channel", group_size=16)
    )
    _, report = optimize.palettize_weights(src, config, output_path=dest, with_report=True)
    print(format_compression_report(report))
    return dest


DEMO_STEP: tuple[str, Callable[[Path, Path], object]] | None = (
    "palettized to 4 bits (k-means, groups of 16 channels)",
    _palettize_demo,
)


def _demo_paths(out_dir: Path) -> tuple[Path, Path | None]:
    """The example package `demo` writes in ``out_dir``, and the result of its step if any."""
    step = None if DEMO_STEP is None else out_dir / f"example.{DEMO_STEP[0].split()[0]}.mlpackage"
    return out_dir / "example.mlpackage", step


def _demo(args: argparse.Namespace) -> int:
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="coreml_compress_demo_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    example_path, result = _demo_paths(out_dir)
    example = Path(_native.write_example(str(example_path)))
    print(f"Example package written to {example}\n")
    print(inspect(example))
    if DEMO_STEP is not None and result is not None:
        label, step = DEMO_STEP
        step(example, result)
        print(f"\n{label.capitalize()}: {result}\n")
        print(inspect(result))
    return 0


def _decompress(args: argparse.Namespace) -> int:
    written = _native.decompress(str(args.input), str(args.output))
    print(f"Decompressed package written to {written}")
    return 0


def _merge_descriptor(sources: Sequence[str]) -> MultiFunctionDescriptor:
    """``PATH`` adds every function of a package under its own name; ``PATH:SRC=TARGET`` adds
    function SRC as TARGET, ``PATH:SRC`` adds SRC under its own name."""
    desc = MultiFunctionDescriptor()
    for arg in sources:
        path, sep, which = arg.rpartition(":")
        if Path(arg).exists() or not sep or "/" in which or "\\" in which:
            desc.add_model(arg)
            continue
        src, _, target = which.partition("=")
        desc.add_function(path, src, target or src)
    return desc


def _merge(args: argparse.Namespace) -> int:
    try:
        desc = _merge_descriptor(args.sources)
        desc.default_function_name = args.default or next(iter(desc._functions()), "main")
    except CoreMLCompressError:
        raise
    except ValueError as e:
        print(f"coreml-compress: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    report = save_multifunction(desc, args.output)
    names = ", ".join(desc._functions())
    print(f"Multifunction package written to {report.path}")
    print(f"Functions: {names} (default: {desc.default_function_name})")
    separate = report.separate_bytes
    share = f" ({100 * report.saved_bytes / separate:.1f}%)" if separate else ""
    print(
        f"weight.bin {format_size(report.weight_file_bytes)}: {report.blobs_written} distinct blobs for "
        f"{report.blob_references} uses; sharing saved {format_size(report.saved_bytes)}{share} "
        f"against {report.functions} separate packages ({format_size(separate)})"
    )
    return 0


def _extract(args: argparse.Namespace) -> int:
    report = extract_function(args.input, args.function, args.output)
    print(
        f"Function {args.function} written to {report.path} "
        f"({report.blobs_written} blobs, weight.bin {format_size(report.weight_file_bytes)})"
    )
    return 0


def _lint(args: argparse.Namespace) -> int:
    messages = lint_package(args.model, args.compute_units)
    print(format_messages(messages))
    failing = {Severity.ERROR, Severity.WARNING} if args.strict else {Severity.ERROR}
    return EXIT_FINDINGS if any(m.severity in failing for m in messages) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coreml-compress",
        description="Inspect and compress Core ML ML Program (.mlpackage) weights.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("info", help="list the weights of a package and how they are stored")
    p.add_argument("path", help="a .mlpackage directory")
    p.set_defaults(run=_info)
    p = sub.add_parser("demo", help="write the built-in example package and show its weights")
    p.add_argument("--out", help="directory for the demo packages (default: a new temp dir)")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(run=_demo)
    p = sub.add_parser("decompress", help="materialize every compressed weight into a dense const")
    p.add_argument("input", help="the .mlpackage to read")
    p.add_argument("output", help="the .mlpackage to write")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(run=_decompress)
    p = sub.add_parser(
        "merge",
        help="merge functions of several packages into one multifunction package",
        description="Merge packages into one multifunction package (coremltools' "
        "save_multifunction), storing every weight blob once whatever input it comes from.",
    )
    p.add_argument("output", help="the multifunction .mlpackage to write")
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="PATH (every function of the package, under its own name), PATH:SRC=TARGET "
        "(function SRC as TARGET) or PATH:SRC",
    )
    p.add_argument("--default", help="the default function (default: the first one)")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(run=_merge)
    p = sub.add_parser("extract", help="write one function of a package as its own package")
    p.add_argument("input", help="the .mlpackage to read")
    p.add_argument("function", help="the function to extract")
    p.add_argument("output", help="the .mlpackage to write")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(run=_extract)
    p = sub.add_parser(
        "lint",
        help="check a package for what will not run as intended on the compute units",
        description="Check any package (compressed by anyone) for forms that will not run as "
        "intended on the compute units: per_block quantization on the Neural Engine, LUTs with a "
        "per-channel scale on the Neural Engine under macOS 26, iOS18 ops in an older opset. "
        "Each finding names the op, the weight, the reason and its source.",
    )
    p.add_argument("model", help="the .mlpackage to check")
    p.add_argument(
        "--compute-units",
        default="all",
        type=str.lower,
        choices=COMPUTE_UNITS,
        help="where the model will run (default: all, Core ML's default, which includes the "
        "Neural Engine)",
    )
    p.add_argument(
        "--strict", action="store_true", help="exit 3 on warnings too, not only on errors"
    )
    p.set_defaults(run=_lint)
    add_compression_commands(sub)
    add_fit_command(sub)
    for command in sub.choices.values():
        command.epilog = EXIT_STATUS_HELP
        command.formatter_class = argparse.RawDescriptionHelpFormatter
        command.set_defaults(parser=command)
    return parser


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """Warnings as one ``coreml-compress: warning:`` paragraph on stderr, without the source
    line Python would print."""
    del category, filename, lineno, file, line
    print(f"coreml-compress: warning: {message}", file=sys.stderr)


def _written_paths(args: argparse.Namespace) -> list[Path]:
    """The paths a command will write (replacing what is there)."""
    if args.command == "demo":
        return [p for p in _demo_paths(Path(args.out)) if p is not None] if args.out else []
    output = getattr(args, "output", None)
    return [] if output is None else [Path(output)]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (see ``EXIT_STATUS_HELP``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for output in _written_paths(args):
        if not args.force and os.path.lexists(output):
            # The API replaces an existing package as coremltools' save does; the CLI asks first.
            print(
                f"coreml-compress: error: {output} already exists; pass --force to replace it",
                file=sys.stderr,
            )
            return EXIT_USAGE
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.run(args)
    except UsageError as e:
        args.parser.error(str(e))  # exits 2
    except (CoreMLCompressError, ValueError, TypeError, OSError) as e:
        # Bad input of any kind (our errors, invalid configs, missing files): one line, no trace.
        print(f"coreml-compress: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("coreml-compress: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
