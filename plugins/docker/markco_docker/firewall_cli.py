"""`python -m markco_docker.firewall_cli install|check|show`: markco's host firewall (see
`markco_docker.firewall`) from the command line; `scripts/setup-podman --firewall` installs it
with this. Exit status 0 when the firewall is in place afterwards, 1 otherwise."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .firewall import FAMILY, RULESET, TABLE, VERSION, FirewallError, check, install, problem_line


def main(argv: Sequence[str] | None = None) -> int:
    """Install, check or show the firewall; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m markco_docker.firewall_cli",
                                     description="markco's nftables firewall for user networks")
    parser.add_argument("action", choices=("install", "check", "show"))
    parser.add_argument("--netns", help="in this network namespace (tests)")
    args = parser.parse_args(argv)
    if args.action == "show":
        sys.stdout.write(RULESET)
        return 0
    if args.action == "install":
        try:
            install(netns=args.netns)
        except FirewallError as exc:
            print(f"firewall: {exc}", file=sys.stderr)
            return 1
    problems = check(netns=args.netns)
    if problems:
        print(f"firewall: {problem_line(problems)}", file=sys.stderr)
        return 1
    print(f"firewall: table {FAMILY} {TABLE} in place ({VERSION})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
