"""markco's host firewall for the docker backend's user networks: an nftables table of its own.

Every user network is a bridge named `mkc<12 hex>` (`naming.bridge_name`). The rules, in the
table `inet markco`:

- **input** (from a user bridge to the host itself): only replies, and DNS (podman's resolver
  listens on each network's gateway). Nothing else new: host services listening on all
  addresses, or on the gateway address, are out of reach of containers.
- **forward**: nothing to `169.254.0.0/16` or `fe80::/10` (cloud metadata, link-local
  services); nothing new INTO a user bridge unless it is bridged within that bridge (a user's
  editor and runtime) — no other user's container, no other host routing to container
  addresses — except ports the engine published (DNAT), and only when they come from outside
  every user bridge. Replies pass.
- Everything else (a user network's egress to the outside, in `egress` mode) is left to the
  engine.

Why a table of our own: the engines manage the iptables FORWARD chain, and netavark inserts its
`NETAVARK_FORWARD` jump at the top of it whenever it creates a network, so an ACCEPT of
its own came before rules installed there earlier. Our base chains hook `input` and `forward`
at priority `filter - 10`: they see each packet before the engine's filter chains (priority
`filter`), and in netfilter a drop in any base chain is final, whatever another table accepts.

`install()` replaces the table atomically (one `nft -f` transaction) and removes the iptables
chains of markco's earlier firewall; `check()` returns what is wrong (nothing: `[]`), for a
`markco doctor` and for the backend's start (`check_at_start`: `egress` refuses to start,
`internal` warns). `scripts/setup-podman --firewall` runs
`python -m markco_docker.firewall_cli install` (also `check`, `show`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

import trio

from markco_trio.errors import BackendError

FAMILY = "inet"
TABLE = "markco"
# Changed whenever the rules change: `check()` then reports an out-of-date table.
VERSION = "markco egress firewall v1"
BRIDGES = "mkc*"
# Before the engines' filter chains (iptables-nft and netavark's nftables driver: `filter`, 0).
PRIORITY = -10
SETUP_HINT = "run `scripts/setup-podman --firewall` as root"
# The base chains `check()` expects: name -> hook.
BASE_CHAINS = {"input": "input", "forward": "forward"}

RULESET = f"""\
# {VERSION}: see markco_docker/firewall.py. Replaced as a whole (declare, delete, create: one
# transaction), so installing it again is harmless.
table {FAMILY} {TABLE}
delete table {FAMILY} {TABLE}
table {FAMILY} {TABLE} {{
\tcomment "{VERSION}"

\tchain input {{
\t\ttype filter hook input priority filter {PRIORITY:+d}; policy accept;
\t\tiifname "{BRIDGES}" jump from_user_network
\t}}

\tchain from_user_network {{
\t\tct state established,related return
\t\tmeta l4proto {{ tcp, udp }} th dport 53 return
\t\ticmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }} return
\t\tcounter drop
\t}}

\tchain forward {{
\t\ttype filter hook forward priority filter {PRIORITY:+d}; policy accept;
\t\tiifname "{BRIDGES}" ip daddr 169.254.0.0/16 counter drop
\t\tiifname "{BRIDGES}" ip6 daddr fe80::/10 counter drop
\t\toifname "{BRIDGES}" jump into_user_network
\t}}

\tchain into_user_network {{
\t\tct state established,related return
\t\tiifname != "{BRIDGES}" ct status dnat return
\t\tfib daddr . iif oif missing counter drop
\t}}
}}
"""

# The iptables chains of markco's earlier firewall (jumps from INPUT and FORWARD).
_LEGACY = (("INPUT", ("-i", "mkc+"), "MARKCO-INPUT"),
           ("FORWARD", ("-i", "mkc+"), "MARKCO-FORWARD"),
           ("FORWARD", ("-o", "mkc+"), "MARKCO-FORWARD"))


def _expected_rule_counts(ruleset: str) -> dict[str, int]:
    """How many rules each chain of `ruleset` has."""
    counts: dict[str, int] = {}
    chain: str | None = None
    for line in ruleset.splitlines():
        text = line.strip()
        if text.startswith("chain "):
            chain = text.split()[1]
            counts[chain] = 0
        elif text == "}":
            chain = None
        elif chain is not None and text and not text.startswith("type "):
            counts[chain] += 1
    return counts


EXPECTED_RULES = _expected_rule_counts(RULESET)


class FirewallError(RuntimeError):
    """The rules could not be installed: the message says why."""


def _nft(netns: str | None) -> list[str]:
    """The `nft` command, in the network namespace `netns` (tests) or this one."""
    nft = shutil.which("nft") or "nft"
    return ["ip", "netns", "exec", netns, nft] if netns else [nft]


def _run(args: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), input=stdin, capture_output=True, text=True, check=False)


def install(*, netns: str | None = None) -> None:
    """Install (or replace) the table, atomically; then remove the earlier iptables chains.
    `netns`: in that network namespace instead of this one (tests)."""
    if shutil.which("nft") is None:
        raise FirewallError("nft is not installed: apt-get install nftables")
    done = _run([*_nft(netns), "-f", "-"], stdin=RULESET)
    if done.returncode != 0:
        raise FirewallError(f"nft could not install table {FAMILY} {TABLE}: "
                            f"{done.stderr.strip()}")
    remove_legacy_iptables(netns=netns)


def remove_legacy_iptables(*, netns: str | None = None) -> list[str]:
    """Remove the MARKCO-INPUT / MARKCO-FORWARD iptables chains and their jumps, if present;
    return what was removed."""
    if shutil.which("iptables") is None:
        return []
    iptables = ["ip", "netns", "exec", netns, "iptables"] if netns else ["iptables"]
    removed: list[str] = []
    for chain, match, target in _LEGACY:
        rule = [chain, *match, "-j", target]
        while _run([*iptables, "-C", *rule]).returncode == 0:
            _run([*iptables, "-D", *rule])
            removed.append(" ".join(rule))
    for target in ("MARKCO-INPUT", "MARKCO-FORWARD"):
        if _run([*iptables, "-F", target]).returncode == 0:
            _run([*iptables, "-X", target])
            removed.append(target)
    return removed


def check(*, netns: str | None = None) -> list[str]:
    """What is wrong with the installed firewall, one line each; `[]` when it is in place:
    the table exists, is this version, has its base chains on their hooks, before the engines'
    filter chains, and as many rules in each chain as installed (a rule deleted by hand
    shows). `netns`: look in that network namespace (tests)."""
    if shutil.which("nft") is None:
        return ["nft (nftables) is not installed, so markco's firewall cannot be either"]
    listed = _run([*_nft(netns), "list", "table", FAMILY, TABLE])
    if listed.returncode != 0:
        error = listed.stderr.strip().splitlines()
        if "No such file or directory" in listed.stderr:
            return [f"the nftables table {FAMILY} {TABLE} is not installed"]
        return [f"cannot read the nftables table {FAMILY} {TABLE}: "
                f"{error[0] if error else 'nft failed'}"]
    problems: list[str] = []
    comment = re.search(r'^\s*comment "([^"]*)"', listed.stdout, re.MULTILINE)
    found_version = comment.group(1) if comment else None
    if found_version != VERSION:
        problems.append(f"the nftables table {FAMILY} {TABLE} is out of date "
                        f"({found_version or 'no version'}; expected {VERSION!r})")
    as_json = _run([*_nft(netns), "-j", "list", "table", FAMILY, TABLE])
    try:
        items: list[dict[str, Any]] = json.loads(as_json.stdout)["nftables"]
    except (ValueError, KeyError, TypeError):
        return [*problems, f"cannot read the nftables table {FAMILY} {TABLE} as JSON"]
    chains = {item["chain"]["name"]: item["chain"] for item in items if "chain" in item}
    rules: dict[str, int] = {}
    for item in items:
        if "rule" in item:
            rules[item["rule"]["chain"]] = rules.get(item["rule"]["chain"], 0) + 1
    for name, hook in BASE_CHAINS.items():
        chain = chains.get(name)
        if chain is None or chain.get("hook") != hook or chain.get("type") != "filter":
            problems.append(f"the table {FAMILY} {TABLE} has no filter chain {name!r} on the "
                            f"{hook} hook")
        elif int(chain.get("prio", 0)) >= 0:
            problems.append(f"chain {name!r} of {FAMILY} {TABLE} has priority "
                            f"{chain.get('prio')}, not before the engines' filter chains (0)")
    for name, expected in EXPECTED_RULES.items():
        found = rules.get(name, 0)
        if name in chains and found != expected:
            problems.append(f"chain {name!r} of {FAMILY} {TABLE} has {found} rules, expected "
                            f"{expected}")
    return problems


def problem_line(problems: Sequence[str]) -> str:
    """One line for a refusal or a report: what is wrong and what to run."""
    return f"markco's host firewall is not in place ({'; '.join(problems)}): {SETUP_HINT}"


async def check_at_start(network: str, *, local: bool, log: logging.Logger) -> None:
    """At the backend's start. In `egress` mode: `BackendError` (one line: what is wrong, what
    to run) unless the firewall is in place. In `internal` mode the networks have no route out,
    but host services listening on all addresses are reachable through the gateway without
    the firewall: a warning says so. A remote engine's host cannot be checked from here: that
    is logged, and left to whoever runs that host."""
    if not local:
        log.warning("docker backend: markco's host firewall cannot be checked on a remote "
                    "engine's host; make sure that host runs `scripts/setup-podman --firewall` "
                    "(or equivalent rules)")
        return
    problems = await trio.to_thread.run_sync(check)
    if not problems:
        return
    if network == "egress":
        raise BackendError(f"docker backend: refusing [compute.docker] network = \"egress\": "
                           f"{problem_line(problems)}")
    log.warning("docker backend: host services listening on all addresses are reachable from "
                "containers: %s", problem_line(problems))
