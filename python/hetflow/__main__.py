"""Command line tools: ``python -m hetflow perfmodel list | show SYMBOL | plot SYMBOL [-o FILE]``.

Exit status: 0 on success, 1 when the command could not do its work (no such model, nothing to
plot, matplotlib missing, a bad symbol), 2 for a malformed command line.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hetflow", description="hetflow command line tools")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
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
        "plot", help="plot a model to a PNG file", description="Plots a model (time against size, log-log) to a PNG."
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
            return _fail(f"no performance model {args.symbol!r} in {perfmodel.directory()} (see 'perfmodel list')")
        if args.action == "show":
            sys.stdout.write(perfmodel.show(args.symbol))
            return 0
        path = perfmodel.perfmodel_plot(args.symbol, args.output)
    except ImportError as exc:
        return _fail(str(exc))
    except (ValueError, OSError, RuntimeError) as exc:
        return _fail(str(exc))
    print(path)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "perfmodel":
        return _perfmodel(args)
    return 2  # unreachable: argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
