"""The `resnet-search` command line. Every user error ends as one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import sys

from resnet_space import ResNetSpec, SpecError, count, parse_budget
from resnet_space.spec import parse_int_list


class UserError(Exception):
    """Bad input or state a user can fix: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise UserError(f"{self.prog}: {message} (see --help)")


def budget_arg(text: str) -> int:
    try:
        return parse_budget(text)
    except SpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def spec_from_flags(args) -> ResNetSpec:
    blocks = parse_int_list("--blocks", args.blocks)
    channels = parse_int_list("--channels", args.channels)
    conv = parse_int_list("--conv-kernel", args.conv_kernel)
    skip = parse_int_list("--skip-kernel", args.skip_kernel)
    n = len(blocks)
    return ResNetSpec(
        blocks=blocks,
        channels=channels,
        conv_kernels=conv * n if len(conv) == 1 else conv,
        skip_kernels=skip * n if len(skip) == 1 else skip,
        pool=args.pool,
        classes=args.classes,
    )


def cmd_count(args) -> int:
    spec = spec_from_flags(args)
    counts = count(spec)
    fits = None if args.budget is None else counts.params < args.budget
    if args.json:
        out = {"summary": spec.summary(), "spec": spec.to_dict(), "params": counts.params, "macs": counts.macs}
        if fits is not None:
            out.update(budget=args.budget, fits=fits)
        print(json.dumps(out))
    else:
        print(f"{spec.summary()}: {counts.params:,} params, {counts.macs:,} MACs")
        if fits is not None:
            verdict = "fits under" if fits else "does not fit under"
            print(f"{verdict} the budget of {args.budget:,} ({args.budget - counts.params:+,})")
    return 0 if fits is None or fits else 1


def build_parser() -> Parser:
    parser = Parser(prog="resnet-search", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("count", help="exact params and MACs of one spec, without building it")
    p.add_argument("--blocks", required=True, help="blocks per stage, e.g. 8,6,4,3")
    p.add_argument("--channels", required=True, help="channels per stage, e.g. 32,64,128,256")
    p.add_argument("--conv-kernel", default="3", help="conv kernel F: one for all stages or one per stage")
    p.add_argument("--skip-kernel", default="1", help="shortcut kernel k: one for all stages or one per stage")
    p.add_argument("--pool", type=int, default=4, help="average-pool kernel P (capped at the final map)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--budget", type=budget_arg, help="exit 0 if the spec fits under it, 1 if not")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_count)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UserError, SpecError) as e:
        print(f"resnet-search: error: {e}" if not str(e).startswith("resnet-search") else str(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("resnet-search: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
