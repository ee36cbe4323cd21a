"""``bedrock-spend``: manage API keys and read the usage ledger of a bedrock-spend stack.

Exit status: 0 ok, 1 operational error (``error: <message>`` on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from bedrock_spend_cli import check_cmd, keys_cmd, ledger_cmd, report_cmd
from bedrock_spend_cli.config import DEFAULT_STACK, Aws, CliError, Tables, UsageError, aws_error_message
from bedrock_spend_cli.output import FORMATS

PROG = "bedrock-spend"

EPILOG = """\
examples:
  bedrock-spend keys create --username alice --team search --budget 50
  bedrock-spend keys list --status active
  bedrock-spend usage --month 2026-01
  bedrock-spend report --from last-month --by principal,model
  bedrock-spend ledger replay proxy-logs.jsonl
  bedrock-spend check --yes                  # after sam deploy: every route, streams, ledger
  bedrock-spend --endpoint-url http://127.0.0.1:5000 --keys-table api-keys keys list

tables: each comes from its flag (--keys-table / --usage-table), else the environment
(BEDROCK_SPEND_KEYS_TABLE / BEDROCK_SPEND_USAGE_TABLE), else the outputs ApiKeyTableName /
UsageTableName of the CloudFormation stack named by --stack.

exit status: 0 ok, 1 operational error (not found, AWS error), 2 usage error.
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the hand-wrapped examples in epilogs as written."""


def add_global_options(parser: argparse.ArgumentParser, *, on_subcommand: bool) -> None:
    """The options every command takes, before or after the subcommand.

    On subcommands their default is SUPPRESS, so a value given before the subcommand is not
    overwritten by the subcommand's default.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if on_subcommand else value

    group = parser.add_argument_group("global options")
    group.add_argument("--region", default=default(None), help="AWS Region (default: from the AWS config)")
    group.add_argument("--profile", default=default(None), help="AWS named profile")
    group.add_argument(
        "--endpoint-url",
        default=default(None),
        metavar="URL",
        help="endpoint for DynamoDB, CloudFormation and CloudWatch, e.g. a local moto server",
    )
    group.add_argument(
        "--keys-table",
        default=default(None),
        metavar="NAME",
        help="API key table (env BEDROCK_SPEND_KEYS_TABLE)",
    )
    group.add_argument(
        "--usage-table",
        default=default(None),
        metavar="NAME",
        help="usage table (env BEDROCK_SPEND_USAGE_TABLE)",
    )
    group.add_argument(
        "--stack",
        default=default(DEFAULT_STACK),
        metavar="NAME",
        help=f"CloudFormation stack whose outputs name the tables (default: {DEFAULT_STACK})",
    )
    group.add_argument(
        "--format", default=default("table"), choices=FORMATS, help="output format (default: table)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Manage the API keys of a bedrock-spend proxy and read its usage ledger.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    add_global_options(parser, on_subcommand=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add_command(
        parent: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str, epilog: str
    ) -> argparse.ArgumentParser:
        sub = parent.add_parser(
            name, help=help, description=help, epilog=epilog, formatter_class=HelpFormatter
        )
        add_global_options(sub, on_subcommand=True)
        sub.set_defaults(parser=sub)
        return sub

    def add_group(name: str, help: str, epilog: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        group = commands.add_parser(
            name, help=help, description=help, epilog=epilog, formatter_class=HelpFormatter
        )
        return group.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)

    keys_cmd.register(add_group, add_command)
    ledger_cmd.register(commands, add_group, add_command)
    report_cmd.register(commands, add_command)
    check_cmd.register(commands, add_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    aws = Aws(region=args.region, profile=args.profile, endpoint_url=args.endpoint_url)
    tables = Tables(aws, stack=args.stack, keys_flag=args.keys_table, usage_flag=args.usage_table)
    try:
        code = int(args.handler(args, aws, tables))
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (`... | head`): not an error. Keep the final flush quiet.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UsageError as exc:
        try:
            args.parser.error(str(exc))
        except SystemExit as exit_:
            return exit_.code if isinstance(exit_.code, int) else 2
        return 2  # pragma: no cover - error() always exits
    except CliError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message = aws_error_message(exc, args.endpoint_url)
        if message is None:
            raise  # a bug: let it show its traceback
        return fail(message)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
