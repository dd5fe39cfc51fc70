"""Command line tools: ``python -m hetflow info`` and
``python -m hetflow perfmodel list | show SYMBOL | plot SYMBOL [-o FILE]``.

Exit status: 0 on success, 1 when the command could not do its work (no such model, nothing to
plot, matplotlib missing, a bad symbol), 2 for a malformed command line.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Tuple


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hetflow", description="hetflow command line tools")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    commands.add_parser(
        "info",
        help="show the version, drivers, workers and settings",
        description="Shows what hetflow would use here: its version and drivers, the workers, scheduler and "
        "executor it would start with (from the HETFLOW_* variables and the machine), the devices found and "
        "where models live. Starts no workers.",
    )
    perfmodel = commands.add_parser(
        "perfmodel",
        help="inspect performance models",
        description="Inspect the performance models in $HETFLOW_HOME/perfmodels (default ~/.hetflow/perfmodels).",
    )
    actions = perfmodel.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    actions.add_parser("list", help="list the models", description="Lists the symbols that have a model.")
    show = actions.add_parser("show", help="print a model as a table", description="Prints a model as a table.")
    show.add_argument("symbol", help="the model's symbol (see 'list')")
    plot = actions.add_parser(
        "plot",
        help="plot a model to an image file",
        description="Plots a model (time against size, log-log) to an image, in the format its suffix names "
        "(PNG by default).",
    )
    plot.add_argument("symbol", help="the model's symbol (see 'list')")
    plot.add_argument(
        "-o", "--output", metavar="FILE", help="where to write the PNG (default: <models directory>/<symbol>.png)"
    )
    return parser


def _fail(message: str) -> int:
    print(f"hetflow: {message}", file=sys.stderr)
    return 1


def _perfmodel(args: argparse.Namespace) -> int:
    from hetflow import perfmodel

    if args.action == "list":
        symbols = perfmodel.list_models()
        if not symbols:
            print(f"hetflow: no performance models in {perfmodel.directory()}", file=sys.stderr)
        for symbol in symbols:
            print(symbol)
        return 0

    try:
        known = args.symbol in perfmodel.list_models()
        if not known:
            perfmodel.entries(args.symbol)  # a symbol no model could have is said so (ValueError)
            return _fail(f"no performance model {args.symbol!r} in {perfmodel.directory()} (see 'perfmodel list')")
        if args.action == "show":
            sys.stdout.write(perfmodel.show(args.symbol))
            # A file there but nothing read from it (damaged, unreadable, newer): said above, and failed.
            return 0 if perfmodel.entries(args.symbol) else 1
        path = perfmodel.perfmodel_plot(args.symbol, args.output)
    except ImportError as exc:
        return _fail(str(exc))
    except (ValueError, OSError, RuntimeError) as exc:
        return _fail(str(exc))
    print(path)
    return 0


def _info_lines() -> List[Tuple[str, str]]:
    """What ``info`` prints, as (label, value) pairs; reads settings and files, starts nothing."""
    import hetflow
    from hetflow import _hetflow, _runtime, perfmodel

    settings = _runtime.Settings(sched=os.environ.get("HETFLOW_SCHED") or None).resolved()
    _hetflow.check_environment()  # the engine's own: HETFLOW_SPIN_US, HETFLOW_CALIBRATE, HETFLOW_SIMULATE's file, ...
    # Read by the device drivers a runtime adds for them (_runtime.device_modules), which info
    # does not load: checked here as those read them.
    _runtime._env_int("HETFLOW_NCUDA", _runtime.MAX_NCUDA)
    _check_opencl_devices(os.environ.get("HETFLOW_OPENCL_DEVICES") or "")
    executor, ncpus, nprocs = settings.executor, settings.ncpus, settings.nprocs
    simulate = os.environ.get("HETFLOW_SIMULATE")
    # The engine's default: dmdas for a simulated machine (or one with devices), else ws.
    scheduler = os.environ.get("HETFLOW_SCHED") or ("dmdas" if simulate else "ws")
    import numpy

    models = perfmodel.list_models()
    # A runtime of the thread executor starts its worker processes only as tasks need them.
    when = ", each started at its first task" if nprocs and _runtime.starts_processes_lazily(str(executor)) else ""
    simulation = [("simulation", f"{simulate} (HETFLOW_SIMULATE: its workers run the tasks, not those above)")]
    return [
        ("hetflow", f"{hetflow.__version__} (Python {sys.version.split()[0]}, numpy {numpy.__version__})"),
        ("extension", _hetflow.__file__),
        ("drivers", "cpu (worker threads), process (worker processes); " + _device_modules()),
        ("topology", "hwloc" if _loaded("libhwloc") else "the process affinity mask (no hwloc)"),
        ("cpu workers", f"{ncpus}" + (" (HETFLOW_NCPUS)" if os.environ.get("HETFLOW_NCPUS") else " (CPUs usable)")),
        ("process workers", f"{nprocs}" + (" (HETFLOW_NPROCS)" if os.environ.get("HETFLOW_NPROCS") else "") + when),
        ("opencl", _opencl_found()),
        ("cuda", _cuda_found()),
        ("scheduler", f"{scheduler} (known: {', '.join(_hetflow.schedulers())})"),
        ("executor", f"{executor}" + (" (HETFLOW_EXECUTOR)" if os.environ.get("HETFLOW_EXECUTOR") else " (default)")),
        ("models", f"{perfmodel.directory()} ({len(models)} model{'' if len(models) == 1 else 's'})"),
        ("optional", ", ".join(_optional(name) for name in ("joblib", "dask", "tqdm", "matplotlib", "threadpoolctl", "pyopencl", "cupy-cuda13x"))),
    ] + simulation * bool(simulate)


def _check_opencl_devices(text: str) -> None:
    """Refuses a ``HETFLOW_OPENCL_DEVICES`` the OpenCL driver refuses (its parse_device_types),
    with its message."""
    if not text:
        return
    for item in text.split(","):
        item = item.strip(" \t\n\r\f\v")
        if item not in ("gpu", "accelerator", "cpu", "all"):
            what = f"unknown device type '{item}'" if item else "an empty item"
            raise ValueError(
                f"HETFLOW_OPENCL_DEVICES='{text}': {what} "
                "(use gpu, accelerator, cpu, all, or a comma-separated list such as gpu,cpu)"
            )


def _device_modules() -> str:
    """The device modules of this build (found, not loaded: they bring the vendor libraries)."""
    import importlib.util

    built = [kind for kind, module in (("opencl", "_hetflow_opencl"), ("cuda", "_hetflow_cuda"))
             if importlib.util.find_spec(f"hetflow.{module}") is not None]
    if not built:
        return "no device modules (no OpenCL SDK or CUDA toolkit when hetflow was built)"
    return ", ".join(built) + " (codelets: hetflow.init(opencl=..., cuda=...))"


def _loaded(library: str) -> bool:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return any(library in line for line in maps)
    except OSError:
        return False


def _opencl_found() -> str:
    directory = os.environ.get("OCL_ICD_VENDORS") or "/etc/OpenCL/vendors"
    try:
        icds = sorted(name[: -len(".icd")] for name in os.listdir(directory) if name.endswith(".icd"))
    except OSError:
        icds = []
    return f"platforms {', '.join(icds)} ({directory})" if icds else "no platform installed"


def _cuda_found() -> str:
    try:
        gpus = os.listdir("/proc/driver/nvidia/gpus")
    except OSError:
        gpus = []
    return f"{len(gpus)} NVIDIA GPU{'' if len(gpus) == 1 else 's'}" if gpus else "no NVIDIA GPU"


def _optional(name: str) -> str:
    from importlib import metadata

    try:
        return f"{name} {metadata.version(name)}"
    except metadata.PackageNotFoundError:
        return f"{name} (not installed)"


def _info() -> int:
    try:
        lines = _info_lines()
    except ValueError as exc:
        # Most of the messages already start with the "hetflow: " that _fail puts first.
        return _fail(f"a HETFLOW_* variable has a bad value: {str(exc).removeprefix('hetflow: ')}")
    width = max(len(label) for label, _ in lines) + 1
    for label, value in lines:
        print(f"{label + ':':<{width}} {value}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        status = _info() if args.command == "info" else _perfmodel(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (`... | head`): what it did not take is not wanted. Python would report
        # the pipe again when it flushes at exit, so stdout goes to /dev/null from here.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        if exc.filename is not None:
            raise
        return _fail(f"the output could not be written: {exc.strerror or exc}")
    return status


if __name__ == "__main__":
    sys.exit(main())
