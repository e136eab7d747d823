"""The data plane's benchmark: markco's front door against Caddy and configurable-http-proxy.

    python bench/proxy.py [--quick] [--soak] [--seconds N] [--json FILE] [--markdown FILE]

One command, not a test. Everything runs on this machine, 127.0.0.1 only, bounded in time:

- the upstream, a stand-in editor (`bench/upstream.js`: Node's raw `net`, fixed responses and a
  WebSocket echo, so the proxies are what is measured);
- markco: the real daemon (`python -m markco_trio run`) with the real auth plugin and a real
  session cookie, forwarding `/u/<id>/...` to the upstream (`bench/markco_bench_compute.py`
  stands in for compute and says the upstream is that user's editor);
- Caddy 2 `reverse_proxy` (when `caddy` is on PATH) and configurable-http-proxy, JupyterHub's
  proxy (when `npm` is: it is installed into `bench/.cache/chp` the first time);
- DIRECT: the upstream without a proxy, in the same run, so every figure has its ratio.

Loads: `wrk` (one thread) for small GETs kept alive and with `Connection: close` (requests/s,
p50/p99) and 1 MiB GETs (MB/s); `bench/wsclient.c` (built with `cc -O2` into `bench/.cache`)
for WebSocket echoes of 64 bytes (echoes/s, p99) and of 1 MiB (MB/s). The proxy's CPU time
(user + system, /proc/PID/stat) over each load, divided by the requests or echoes it served,
is reported next to the rate: µs of CPU each. The proxy's RSS is sampled throughout (for
markco: the whole daemon process — API app, storage and all). Each load runs in rounds that
interleave the targets (default 3 rounds of 5 s); the median round of each target is
reported. `--soak` adds 60 s of small keep-alive requests through markco in 5 s windows:
requests/s and RSS per window should stay flat. `--quick`: one round of 2 s.

The targets (issue 5): small requests/s (both kinds) and 1 MiB throughput at least Caddy's;
WebSocket echoes/s at least CHP's with a p99 no worse; RSS no more than Caddy's; flat under the
soak (issue 5); CPU per small keep-alive request and per 64 B echo at most 0.6× Caddy's
(issue 14). The summary says which were met.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CACHE = BENCH / ".cache"
CHP_VERSION = "4.6.3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def cpu_seconds(pid: int | None) -> float:
    """The CPU time (user + system) a process has used so far, from /proc/PID/stat; its
    threads included (hypercorn's, storage's), its exited children not."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


class RssSampler:
    """Samples a process's RSS every 0.2 s in a thread; `peak` and `last` in MiB."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.peak = 0.0
        self.last = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.pid is not None:
            self.last = rss_mib(self.pid)
            self.peak = max(self.peak, self.last)
            self._stop.wait(0.2)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------ the processes


@dataclass
class Target:
    """Something to send load to: the upstream itself or a proxy in front of it."""

    name: str
    port: int
    pid: int | None  # the process whose RSS is the proxy's (None: direct)
    headers: list[str] = field(default_factory=list)
    prefix: str = "/u/bench"


class Processes:
    """Starts and stops the processes of one run."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str], *, env: dict[str, str] | None = None,
              log: str = "log") -> subprocess.Popen[bytes]:
        out = open(self.workdir / f"{log}.log", "wb")
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                 cwd=self.workdir, start_new_session=True)
        self.children.append(child)
        return child

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()


def start_upstream(procs: Processes) -> int:
    port = free_port()
    procs.spawn(["node", str(BENCH / "upstream.js"), str(port)], log="upstream")
    wait_port(port)
    return port


def create_session(data_dir: Path) -> tuple[str, str]:
    """A user and a session in the daemon's database, made before it starts: (user id, token)."""
    sys.path.insert(0, str(ROOT))
    from markco_trio.builtin.auth.authority import SessionAuthority
    from markco_trio.builtin.auth.login_links import ensure_user
    from markco_trio.builtin.auth.options import AuthOptions
    from markco_trio.clock import SystemClock
    from markco_trio.storage.sqlite import SqliteStorage

    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def make() -> tuple[str, str]:
        async with SqliteStorage(data_dir / "markco.db") as storage:
            await storage.upgrade()
            clock = SystemClock()
            user, _ = await ensure_user(storage, clock, "bench", admin=False)
            authority = SessionAuthority(storage, clock, AuthOptions(), secure=False)
            token, _ = await authority.open_session(user)
            return user.id, token

    import trio

    return trio.run(make)


def start_markco(procs: Processes, upstream: int) -> Target:
    port = free_port()
    data_dir = procs.workdir / "markco-data"
    user_id, token = create_session(data_dir)
    config = procs.workdir / "markco.toml"
    config.write_text(textwrap.dedent(f"""
        [server]
        listen = "127.0.0.1:{port}"
        public_url = "http://127.0.0.1:{port}"
        data_dir = "{data_dir}"

        [plugins]
        # A single-machine deployment: SQLite, console login; compute is the stand-in. The
        # optional plugins installed in this environment (PostgreSQL, docker, GitHub) are
        # not what it runs, so they are not loaded (each would add its imports to the RSS).
        disable = ["compute", "process", "postgres", "docker", "github"]
        modules = ["markco_bench_compute"]

        [compute_control]
        provider = "bench"

        [auth]
        login_link = "never"
        """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH), str(ROOT)]),
           "MARKCO_BENCH_UPSTREAM": f"127.0.0.1:{upstream}"}
    child = procs.spawn([sys.executable, "-m", "markco_trio", "run", "--config", str(config)],
                        env=env, log="markco")
    wait_port(port, 30)
    headers = [f"Cookie: markco_session={token}", f"Origin: http://127.0.0.1:{port}"]
    return Target("markco", port, child.pid, headers, prefix=f"/u/{user_id}")


def start_caddy(procs: Processes, upstream: int) -> Target | None:
    caddy = shutil.which("caddy")
    if caddy is None:
        return None
    port = free_port()
    config = {
        "admin": {"disabled": True},
        "logging": {"logs": {"default": {"level": "ERROR"}}},
        "apps": {"http": {"servers": {"bench": {
            "listen": [f"127.0.0.1:{port}"],
            "automatic_https": {"disable": True},
            "routes": [{"handle": [{"handler": "reverse_proxy",
                                    "upstreams": [{"dial": f"127.0.0.1:{upstream}"}]}]}],
        }}}},
    }
    path = procs.workdir / "caddy.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "XDG_DATA_HOME": str(procs.workdir / "xdg-data"),
           "XDG_CONFIG_HOME": str(procs.workdir / "xdg-config")}
    child = procs.spawn([caddy, "run", "--config", str(path)], env=env, log="caddy")
    wait_port(port)
    return Target("caddy", port, child.pid)


def install_chp() -> Path | None:
    """configurable-http-proxy from npm into bench/.cache/chp (once); its entry script."""
    entry = CACHE / "chp" / "node_modules" / "configurable-http-proxy" / "bin" / \
        "configurable-http-proxy"
    if entry.exists():
        return entry
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return None
    print(f"installing configurable-http-proxy@{CHP_VERSION} into {CACHE / 'chp'} ...",
          flush=True)
    (CACHE / "chp").mkdir(parents=True, exist_ok=True)
    result = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix",
                             str(CACHE / "chp"), f"configurable-http-proxy@{CHP_VERSION}"],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0 or not entry.exists():
        print(f"  npm install failed; CHP left out:\n{result.stderr[-1500:]}", flush=True)
        return None
    return entry


def start_chp(procs: Processes, upstream: int) -> Target | None:
    entry = install_chp()
    if entry is None:
        return None
    port, api = free_port(), free_port()
    env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": "bench-only"}
    child = procs.spawn(["node", str(entry), "--ip", "127.0.0.1", "--port", str(port),
                         "--api-ip", "127.0.0.1", "--api-port", str(api), "--default-target",
                         f"http://127.0.0.1:{upstream}", "--log-level", "error"],
                        env=env, log="chp")
    wait_port(port)
    return Target("chp", port, child.pid)


def build_wsclient() -> Path:
    source = BENCH / "wsclient.c"
    binary = CACHE / "wsclient"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        CACHE.mkdir(parents=True, exist_ok=True)
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise SystemExit("bench/proxy.py needs a C compiler (cc) for the WebSocket client")
        subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=True)
    return binary


# ------------------------------------------------------------------------------ the loads

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s)", text)
    if match is None:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _bytes(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)([KMG]?B)", text)
    if match is None:
        return float("nan")
    return float(match.group(1)) * {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[
        match.group(2)]


def wrk(target: Target, path: str, seconds: float, connections: int,
        extra: list[str] | None = None) -> dict[str, float]:
    """Run wrk (one thread) against `target`; requests/s, p50/p99 in ms, MB/s, errors."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
            "--timeout", "5s"]
    for header in [*target.headers, *(extra or [])]:
        argv += ["-H", header]
    argv.append(f"http://127.0.0.1:{target.port}{target.prefix}{path}")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    result: dict[str, float] = {"rps": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"),
                                "mb_s": 0.0, "errors": 0.0, "non2xx": 0.0}
    if m := re.search(r"(\d+) requests in", out):
        result["count"] = float(m.group(1))
    if m := re.search(r"Requests/sec:\s+([0-9.]+)", out):
        result["rps"] = float(m.group(1))
    if m := re.search(r"Transfer/sec:\s+(\S+)", out):
        result["mb_s"] = _bytes(m.group(1)) / 1e6
    if m := re.search(r"\n\s+50%\s+(\S+)", out):
        result["p50_ms"] = _ms(m.group(1))
    if m := re.search(r"\n\s+99%\s+(\S+)", out):
        result["p99_ms"] = _ms(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      out):
        result["errors"] = float(sum(int(g) for g in m.groups()))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        result["non2xx"] = float(m.group(1))
    return result


def ws(binary: Path, target: Target, seconds: float, connections: int,
       size: int) -> dict[str, float]:
    argv = [str(binary), "127.0.0.1", str(target.port), f"{target.prefix}/ws",
            str(connections), str(seconds), str(size), *target.headers]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    if result.returncode != 0:
        print(f"  wsclient against {target.name} failed: {result.stderr.strip()[:300]}")
        return {"echoes_per_s": 0.0, "p50_us": float("nan"), "p99_us": float("nan"),
                "mb_per_s": 0.0, "errors": 1.0}
    data: dict[str, float] = json.loads(result.stdout)
    return data


# ------------------------------------------------------------------------------ the run


@dataclass
class Results:
    machine: dict[str, Any]
    seconds: float
    repeat: int
    rows: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)
    soak: list[dict[str, float]] = field(default_factory=list)

    def put(self, test: str, target: str, values: dict[str, float]) -> None:
        self.rows.setdefault(test, {})[target] = values


def machine() -> dict[str, Any]:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "cpu": model,
            "kernel": platform.release(), "python": platform.python_version()}


def run(args: argparse.Namespace) -> Results:
    seconds = 2.0 if args.quick else args.seconds
    repeat = 1 if args.quick else args.repeat
    binary = build_wsclient()
    results = Results(machine(), seconds, repeat)
    with tempfile.TemporaryDirectory(prefix="markco-bench-") as tmp:
        procs = Processes(Path(tmp))
        try:
            upstream = start_upstream(procs)
            targets = [Target("direct", upstream, None, prefix="/u/bench")]
            wanted = set(args.only.split(",")) if args.only else None
            targets.append(start_markco(procs, upstream))
            for start in (start_caddy, start_chp):
                if wanted is not None and start.__name__.removeprefix("start_") not in wanted:
                    continue
                target = start(procs, upstream)
                if target is not None:
                    targets.append(target)
            names = ", ".join(t.name for t in targets)
            print(f"targets: {names}; {seconds:g} s per load", flush=True)
            # Warm up every target (caches, pools, JIT) before measuring.
            for target in targets:
                wrk(target, "/small", 1, 16)
            samplers = {t.name: RssSampler(t.pid) for t in targets}
            for sampler in samplers.values():
                sampler.__enter__()
            try:
                loads: list[tuple[str, Any]] = [
                    ("small keep-alive", lambda t: wrk(t, "/small", seconds, 64)),
                    ("small Connection: close",
                     lambda t: wrk(t, "/small", seconds, 32, ["Connection: close"])),
                    ("1 MiB GET", lambda t: wrk(t, "/1mib", seconds, 8)),
                    ("WebSocket 64 B echo", lambda t: ws(binary, t, seconds, 32, 64)),
                    ("WebSocket 1 MiB echo", lambda t: ws(binary, t, seconds, 4, 1 << 20)),
                ]
                for test, load in loads:
                    if args.loads and not any(k in test for k in args.loads.split(",")):
                        continue
                    runs: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
                    # Rounds interleave the targets, so a burst of other load on the shared
                    # machine lands on all of them; each target's median round is kept.
                    for _ in range(repeat):
                        for target in targets:
                            cpu = cpu_seconds(target.pid)
                            values = load(target)
                            with_cpu(values, cpu_seconds(target.pid) - cpu, target)
                            runs[target.name].append(values)
                            print(f"  {test:<24} {target.name:<7} {summary(test, values)}",
                                  flush=True)
                            time.sleep(0.5)
                    for name, values_list in runs.items():
                        ordered = sorted(values_list, key=lambda v: headline(test, v))
                        results.put(test, name, ordered[len(ordered) // 2])
            finally:
                for sampler in samplers.values():
                    sampler.__exit__()
            for target in targets:
                if target.pid is not None:
                    results.rss[target.name] = samplers[target.name].peak
            if args.soak:
                markco = next(t for t in targets if t.name == "markco")
                results.soak = soak(markco, 60.0, 5.0)
        finally:
            procs.stop()
    return results


def with_cpu(values: dict[str, float], cpu: float, target: Target) -> None:
    """Add the proxy's CPU time per request (or per echo) to a load's `values`, in µs: the
    process CPU time the load cost it over the requests (echoes) it served. It counts what
    the proxy spent, whatever the load generator could push through it in the time."""
    count = values.get("count") or values.get("echoes") or 0.0
    if target.pid is not None and count:
        values["cpu_us"] = cpu * 1e6 / count


def soak(target: Target, total: float, window: float) -> list[dict[str, float]]:
    print(f"soak: {total:g} s of small keep-alive requests through {target.name}", flush=True)
    windows = []
    for i in range(int(total / window)):
        values = wrk(target, "/small", window, 64)
        assert target.pid is not None
        entry = {"t": (i + 1) * window, "rps": values["rps"], "p99_ms": values["p99_ms"],
                 "rss_mib": rss_mib(target.pid), "errors": values["errors"] + values["non2xx"]}
        windows.append(entry)
        print(f"  {entry['t']:>4.0f} s  {entry['rps']:>9,.0f} req/s  p99 {entry['p99_ms']:.2f} ms"
              f"  RSS {entry['rss_mib']:.1f} MiB", flush=True)
    return windows


def failures(v: dict[str, float]) -> str:
    """A warning when some requests failed: such a row is not a fair number."""
    bad = v.get("errors", 0) + v.get("non2xx", 0)
    return f" [{bad:,.0f} FAILED]" if bad else ""


def summary(test: str, v: dict[str, float]) -> str:
    cpu = f"  CPU {v['cpu_us']:.1f} µs each" if "cpu_us" in v else ""
    return _summary(test, v) + cpu + failures(v)


def _summary(test: str, v: dict[str, float]) -> str:
    if test.startswith("small"):
        return f"{v['rps']:>10,.0f} req/s  p50 {v['p50_ms']:.2f} ms  p99 {v['p99_ms']:.2f} ms"
    if test.startswith("1 MiB"):
        return f"{v['mb_s']:>10,.0f} MB/s"
    if "64 B" in test:
        return f"{v['echoes_per_s']:>10,.0f} echoes/s  p99 {v['p99_us'] / 1000:.2f} ms"
    return f"{v['mb_per_s']:>10,.0f} MB/s"


# ------------------------------------------------------------------------------ the report


def headline(test: str, v: dict[str, float]) -> float:
    if test.startswith("small"):
        return v["rps"]
    if test.startswith("1 MiB"):
        return v["mb_s"]
    if "64 B" in test:
        return v["echoes_per_s"]
    return v["mb_per_s"]


def cell(test: str, v: dict[str, float] | None, direct: dict[str, float] | None) -> str:
    if v is None:
        return "—"
    value = headline(test, v)
    ratio = ""
    if direct is not None and headline(test, direct):
        ratio = f" ({value / headline(test, direct):.0%})"
    if test.startswith("small"):
        text = f"{value:,.0f} req/s{ratio}, p50 {v['p50_ms']:.2f} / p99 {v['p99_ms']:.2f} ms"
    elif "64 B" in test:
        text = f"{value:,.0f}/s{ratio}, p99 {v['p99_us'] / 1000:.2f} ms"
    else:
        text = f"{value:,.0f} MB/s{ratio}"
    if "cpu_us" in v and (test.startswith("small") or "64 B" in test):
        text += f", CPU {v['cpu_us']:.0f} µs each"
    return text + failures(v)


def targets_met(results: Results) -> list[tuple[str, bool | None, str]]:
    rows = results.rows

    def get(test: str, name: str) -> dict[str, float] | None:
        return rows.get(test, {}).get(name)

    checks: list[tuple[str, bool | None, str]] = []
    for test in ("small keep-alive", "small Connection: close", "1 MiB GET"):
        markco, caddy = get(test, "markco"), get(test, "caddy")
        if markco is None or caddy is None:
            checks.append((f"{test} ≥ Caddy", None, "Caddy not run"))
            continue
        m, c = headline(test, markco), headline(test, caddy)
        checks.append((f"{test} ≥ Caddy", m >= c, f"{m:,.0f} vs {c:,.0f} ({m / c:.0%})"))
    for test in ("small keep-alive", "WebSocket 64 B echo"):
        # Issue 14: the front door's CPU per small request and per echo ≤ 0.6× Caddy's.
        markco, caddy = get(test, "markco"), get(test, "caddy")
        if markco is None or caddy is None or "cpu_us" not in markco or "cpu_us" not in caddy:
            checks.append((f"{test}: CPU each ≤ 0.6× Caddy's", None, "Caddy not run"))
            continue
        m, c = markco["cpu_us"], caddy["cpu_us"]
        checks.append((f"{test}: CPU each ≤ 0.6× Caddy's", m <= 0.6 * c,
                       f"{m:.1f} µs vs {c:.1f} µs ({m / c:.2f}×)"))
    markco, chp = get("WebSocket 64 B echo", "markco"), get("WebSocket 64 B echo", "chp")
    if markco is None or chp is None:
        checks.append(("WebSocket echoes ≥ CHP, p99 no worse", None, "CHP not run"))
    else:
        ok = markco["echoes_per_s"] >= chp["echoes_per_s"] and markco["p99_us"] <= chp["p99_us"]
        checks.append(("WebSocket echoes ≥ CHP, p99 no worse", ok,
                       f"{markco['echoes_per_s']:,.0f}/s p99 {markco['p99_us'] / 1000:.2f} ms vs "
                       f"{chp['echoes_per_s']:,.0f}/s p99 {chp['p99_us'] / 1000:.2f} ms"))
    if "markco" in results.rss and "caddy" in results.rss:
        m, c = results.rss["markco"], results.rss["caddy"]
        checks.append(("RSS ≤ Caddy's", m <= c, f"{m:.0f} MiB vs {c:.0f} MiB"))
    if results.soak:
        rps = [w["rps"] for w in results.soak]
        rss = [w["rss_mib"] for w in results.soak]
        errors = sum(w["errors"] for w in results.soak)
        # Flat: no trend from the first quarter to the last (one window can catch another
        # job on the shared machine), RSS not growing, nothing failing.
        quarter = max(1, len(rps) // 4)
        first, last = sorted(rps[:quarter]), sorted(rps[-quarter:])
        start_rate, end_rate = first[len(first) // 2], last[len(last) // 2]
        flat = (end_rate >= 0.9 * start_rate and rss[-1] <= rss[0] * 1.05 + 2 and not errors)
        checks.append(("flat under a 60 s soak", flat,
                       f"req/s {start_rate:,.0f} (first quarter) → {end_rate:,.0f} (last), "
                       f"windows {min(rps):,.0f}–{max(rps):,.0f}; RSS {rss[0]:.1f} → "
                       f"{rss[-1]:.1f} MiB; {errors:.0f} errors"))
    return checks


def markdown(results: Results) -> str:
    m = results.machine
    names = [n for n in ("direct", "markco", "caddy", "chp")
             if any(n in row for row in results.rows.values())]
    titles = {"direct": "direct (no proxy)", "markco": "markco", "caddy": "Caddy 2.6",
              "chp": "CHP " + CHP_VERSION}
    lines = [
        f"Measured {m['date']} on {m['cores']} cores ({m['cpu']}, shared with the load "
        f"generator and the upstream), Linux {m['kernel']}, Python {m['python']}; "
        f"median of {results.repeat} interleaved rounds of {results.seconds:g} s per load; "
        f"`python bench/proxy.py`. Percentages: of DIRECT.",
        "",
        "| load | " + " | ".join(titles[n] for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for test, row in results.rows.items():
        direct = row.get("direct")
        lines.append(f"| {test} | " + " | ".join(cell(test, row.get(n), direct)
                                                  for n in names) + " |")
    lines.append("| proxy RSS (peak) | " + " | ".join(
        f"{results.rss[n]:.0f} MiB" if n in results.rss else "—" for n in names) + " |")
    lines += ["", "| target | met | numbers |", "|---|---|---|"]
    for name, ok, detail in targets_met(results):
        lines.append(f"| {name} | {'yes' if ok else 'n/a' if ok is None else 'NO'} | {detail} |")
    if results.soak:
        lines += ["", "Soak (markco, small keep-alive, 5 s windows): " + ", ".join(
            f"{w['rps']:,.0f}/s @ {w['rss_mib']:.0f} MiB" for w in results.soak) + "."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one round of 2 s per load (instead of 3 rounds of 5 s)")
    parser.add_argument("--soak", action="store_true", help="add a 60 s soak through markco")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per load")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds per load; the median round of each target is reported")
    parser.add_argument("--only", help="proxies besides markco and direct, e.g. caddy,chp")
    parser.add_argument("--loads", help="only the loads whose name contains one of these, "
                        "comma-separated (e.g. 'small,64 B')")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    for tool in ("wrk", "node"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench/proxy.py needs `{tool}` on PATH (apt-get install {tool})")
    results = run(args)
    table = markdown(results)
    print()
    print(table)
    if args.json:
        args.json.write_text(json.dumps(results.__dict__, indent=2))
    if args.markdown:
        args.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
