"""The admin page: runtimes (state, host, memory, last activity), hosts, users and recent
events, and its actions (stop, sleep, wake) — each a POST that only an administrator's browser
session, from a markco page, with the session's form token, may make.

A real daemon (SQLite, the auth plugin, real HTTP). Compute is a STAND-IN (`FakeCompute`)
here: these tests are about who may act and what the page shows from compute's answers; a real
sleep and wake from the dashboard, with CRIU, is tests/journey's.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import httpx

from markco_trio.builtin.auth.tokens import form_token
from markco_trio.records import RuntimeState, WorkloadRole
from markco_trio.roles import BackendCapabilities, ContainerStats
from tests.auth.conftest import Markco, StartMarkco

FROM_PAGE = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate",
             "Sec-Fetch-Dest": "document"}
MIB = 1 << 20


@dataclass
class FakeBackend:
    """Answers `stats` with a working set per handle; counts the samples."""

    name: str = "process"
    working_sets: dict[str, int] = field(default_factory=dict)
    sampled: int = 0

    def capabilities(self) -> BackendCapabilities:
        return BackendCapabilities(update_limits_live=True, checkpoint=True,
                                   isolated_network=True, per_user_cgroup=True)

    async def stats(self, handle: str) -> ContainerStats:
        self.sampled += 1
        return ContainerStats(memory_working_set=self.working_sets[handle],
                              memory_limit=1024 * MIB, cpu_usage_seconds=0.0,
                              sampled_at=time.time())


@dataclass
class Summary:
    summary: str


@dataclass
class FakeCompute:
    """What the admin page and its actions ask of compute; records the requests."""

    backend: FakeBackend = field(default_factory=FakeBackend)
    host: str = "local"
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    summaries: dict[str, str] = field(default_factory=dict)
    activity: dict[str, float] = field(default_factory=dict)

    def request(self, user_id: str, kind: str, *, reason: str) -> None:
        self.requests.append((user_id, kind, reason))

    def state_nowait(self, user_id: str) -> Summary:
        return Summary(self.summaries.get(user_id, "running"))

    def last_activity_nowait(self, user_id: str) -> float | None:
        return self.activity.get(user_id)

    def editor_address_nowait(self, user_id: str) -> None:
        return None

    def record_activity(self, user_id: str, kind: str) -> None:
        pass


async def with_runtime(markco: Markco, username: str, *, state: RuntimeState,
                       handle: str) -> str:
    """A user with live runtime and editor records; their id."""
    user = await markco.user(username)
    for role in (WorkloadRole.RUNTIME, WorkloadRole.EDITOR):
        await markco.storage.create_runtime(
            user_id=user.id, role=role, backend="process", host="local", state=state,
            limits={}, now=time.time(), handle=f"{handle}-{role.value}")
    return user.id


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


async def admin_and_page(markco: Markco) -> tuple[httpx.AsyncClient, str]:
    client = await markco.login_as("root", admin=True)
    page = await client.get("/admin")
    assert page.status_code == 200, page.text
    return client, page.text


async def test_the_page_shows_runtimes_with_state_host_memory_and_activity(
        start_markco: StartMarkco) -> None:
    compute = FakeCompute()
    markco = await start_markco(compute=compute)
    ada = await with_runtime(markco, "ada", state=RuntimeState.RUNNING, handle="h-ada")
    bob = await with_runtime(markco, "bob", state=RuntimeState.SLEEPING, handle="h-bob")
    compute.backend.working_sets["h-ada-runtime"] = 300 * MIB
    compute.summaries[bob] = "sleeping"
    compute.activity[ada] = time.time()
    _, page = await admin_and_page(markco)
    ada_row = re.search(rf'<tr data-user="{ada}">.*?</tr>', page)
    bob_row = re.search(rf'<tr data-user="{bob}">.*?</tr>', page)
    assert ada_row and bob_row
    assert "@ada" in ada_row[0] and "running" in ada_row[0] and "local" in ada_row[0]
    assert "300 MiB of 1024 MiB" in ada_row[0]
    assert "never" not in ada_row[0] and "UTC" in ada_row[0]
    assert "sleeping" in bob_row[0] and "/wake" in bob_row[0] and "/sleep" not in bob_row[0]
    assert compute.backend.sampled == 1  # the sleeping runtime is not sampled


async def test_the_page_lists_hosts_with_their_workloads(start_markco: StartMarkco) -> None:
    compute = FakeCompute()
    markco = await start_markco(compute=compute)
    await with_runtime(markco, "ada", state=RuntimeState.RUNNING, handle="h-ada")
    await with_runtime(markco, "bob", state=RuntimeState.SLEEPING, handle="h-bob")
    compute.backend.working_sets["h-ada-runtime"] = 200 * MIB
    _, page = await admin_and_page(markco)
    hosts = page[page.index('<section id="hosts">'):]
    hosts = hosts[:hosts.index("</section>")]
    assert re.search(r"<td>local</td><td>process</td><td>4</td><td>2</td><td>2</td>"
                     r"<td>200 MiB</td><td>yes</td>", hosts), hosts


async def test_move_is_shown_disabled_with_the_reason(start_markco: StartMarkco) -> None:
    markco = await start_markco(compute=FakeCompute())
    await with_runtime(markco, "ada", state=RuntimeState.RUNNING, handle="h-ada")
    _, page = await admin_and_page(markco)
    assert re.search(r'<button type="button" class="secondary" disabled title="Moving[^"]*'
                     r'not built yet[^"]*">Move</button>', page)


async def test_the_page_shows_recent_events_newest_first(start_markco: StartMarkco) -> None:
    markco = await start_markco(compute=FakeCompute())
    ada = await markco.user("ada")
    for n in range(40):
        await markco.daemon.ctx.events.publish("ops.test", user_id=ada.id, data={"n": n})
    _, page = await admin_and_page(markco)
    events = page[page.index('<section id="events">'):]
    numbers = [int(n) for n in re.findall(r"n=(\d+)", events)]
    assert numbers[:3] == [39, 38, 37] and len(numbers) <= 30
    assert "@ada" in events


async def test_an_admin_puts_a_runtime_to_sleep_and_it_is_recorded(
        start_markco: StartMarkco) -> None:
    compute = FakeCompute()
    markco = await start_markco(compute=compute)
    ada = await with_runtime(markco, "ada", state=RuntimeState.RUNNING, handle="h-ada")
    client, page = await admin_and_page(markco)
    for action in ("sleep", "wake", "stop"):
        done = await client.post(f"/admin/runtimes/{ada}/{action}", data={"csrf": csrf(page)},
                                 headers={**markco.origin(), **FROM_PAGE})
        assert done.status_code == 303 and done.headers["location"].endswith("/admin#runtimes")
    assert [(u, k) for u, k, _ in compute.requests] == [(ada, "sleep"), (ada, "wake"),
                                                        (ada, "stop")]
    assert all(reason == "admin @root" for _, _, reason in compute.requests)
    recorded = await markco.events("admin.action")
    assert [(e.user_id, e.data["action"], e.data["admin"]) for e in recorded] == [
        (ada, "sleep", "root"), (ada, "wake", "root"), (ada, "stop", "root")]


async def test_a_non_admin_cannot_act(start_markco: StartMarkco) -> None:
    compute = FakeCompute()
    markco = await start_markco(compute=compute)
    ada = await with_runtime(markco, "ada", state=RuntimeState.RUNNING, handle="h-ada")
    eve = await markco.login_as("eve")
    token = form_token(eve.cookies[markco.authority.cookie_name])  # eve's own, valid token
    refused = await eve.post(f"/admin/runtimes/{ada}/stop", data={"csrf": token},
                             headers={**markco.origin(), **FROM_PAGE})
    assert refused.status_code == 403
    assert (await eve.get("/admin")).status_code == 403
    assert compute.requests == []


async def test_an_action_without_the_form_token_is_refused(start_markco: StartMarkco) -> None:
    compute = FakeCompute()
    markco = await start_markco(compute=compute)
    ada = await with_runtime(markco, "ada", state=RuntimeState.RUNNING, handle="h-ada")
    client, page = await admin_and_page(markco)
    for data in ({}, {"csrf": "forged"}, {"csrf": csrf(page)[:-1]}):
        refused = await client.post(f"/admin/runtimes/{ada}/stop", data=data,
                                    headers={**markco.origin(), **FROM_PAGE})
        assert refused.status_code == 403, data
    assert compute.requests == []


async def test_a_cross_site_action_is_refused(start_markco: StartMarkco) -> None:
    compute = FakeCompute()
    markco = await start_markco(compute=compute)
    ada = await with_runtime(markco, "ada", state=RuntimeState.RUNNING, handle="h-ada")
    client, page = await admin_and_page(markco)
    token = csrf(page)  # even with the right token (it could have leaked)
    for headers in ({"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "cross-site"}):
        refused = await client.post(f"/admin/runtimes/{ada}/stop", data={"csrf": token},
                                    headers=headers)
        assert refused.status_code == 403, headers
    assert compute.requests == []


async def test_an_admin_api_token_cannot_use_the_admin_actions(
        start_markco: StartMarkco) -> None:
    compute = FakeCompute()
    markco = await start_markco(compute=compute)
    ada = await with_runtime(markco, "ada", state=RuntimeState.RUNNING, handle="h-ada")
    client, _ = await admin_and_page(markco)
    made = await client.post("/api/v1/tokens", json={"name": "t", "scopes": ["user", "admin"]},
                             headers=markco.origin())
    assert made.status_code == 201, made.text
    api = markco.client(headers={"Authorization": f"Bearer {made.json()['token']}"})
    assert (await api.post(f"/admin/runtimes/{ada}/stop")).status_code == 403
    assert compute.requests == []


async def test_an_anonymous_action_is_refused(start_markco: StartMarkco) -> None:
    compute = FakeCompute()
    markco = await start_markco(compute=compute)
    ada = await with_runtime(markco, "ada", state=RuntimeState.RUNNING, handle="h-ada")
    refused = await markco.client().post(f"/admin/runtimes/{ada}/stop",
                                         headers={**markco.origin(), **FROM_PAGE})
    assert refused.status_code == 403 and compute.requests == []


async def test_an_unknown_action_or_user_is_a_clear_404(start_markco: StartMarkco) -> None:
    compute = FakeCompute()
    markco = await start_markco(compute=compute)
    ada = await with_runtime(markco, "ada", state=RuntimeState.RUNNING, handle="h-ada")
    client, page = await admin_and_page(markco)
    headers = {**markco.origin(), **FROM_PAGE}
    bad = await client.post(f"/admin/runtimes/{ada}/move", data={"csrf": csrf(page)},
                            headers=headers)
    assert bad.status_code == 404 and "stop, sleep, wake" in bad.text
    nobody = await client.post("/admin/runtimes/nobody/stop", data={"csrf": csrf(page)},
                               headers=headers)
    assert nobody.status_code == 404 and "no user" in nobody.text
    assert compute.requests == []


async def test_without_compute_the_page_says_no_workloads_run(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    _, page = await admin_and_page(markco)
    assert "No workload is live" in page and "this markco runs no workloads" in page


async def test_another_feature_adds_a_section_of_its_own() -> None:
    from markco_trio.builtin.auth.pages import admin_page

    page = admin_page([], next_cursor=None, me="x",
                      extra_sections=['<section id="plans">PLANS</section>'])
    html = await page.get_data(as_text=True)
    assert isinstance(html, str) and '<section id="plans">PLANS</section></main>' in html
