"""The auth plugin's HTML pages: small, server-rendered, every value escaped, no external asset.

Every page is sent with a strict Content-Security-Policy (no script at all, the one inline
stylesheet allowed by its hash, forms only to this origin, no framing), `no-store` (pages show
personal data) and `Referrer-Policy: same-origin`: paths such as invite links never reach other
sites, while markco's own form posts keep their `Origin` (under `no-referrer` a browser sends
`Origin: null`, which the CSRF check must refuse). `Cross-Origin-Opener-Policy: same-origin`
keeps a page opened from an editor page (`/u/`, same origin but no such policy) out of its
opener's reach.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

from quart import Response

from ...authz import Principal
from ...records import Event, Grant, Identity, Invite, Session, User
from .admin_entries import AdminEntry

_CSS = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:3rem auto;padding:0 1rem;"
    "color:#1d1d1f;background:#fbfbfd}"
    "h1{font-size:1.5rem;margin-bottom:.25rem}h2{font-size:1.1rem;margin-top:2rem}"
    ".muted{color:#6e6e73}.box{background:#fff;border:1px solid #d2d2d7;border-radius:.5rem;"
    "padding:1rem 1.25rem;margin:1rem 0}.warn{border-color:#c93400;background:#fff8f3}"
    ".error{border-color:#d70015;background:#fff5f5}"
    "a.button,button{display:inline-block;font:inherit;padding:.5rem 1rem;border-radius:.4rem;"
    "border:1px solid #0071e3;background:#0071e3;color:#fff;text-decoration:none;"
    "cursor:pointer;margin:.25rem .5rem .25rem 0}"
    "button.secondary{background:#fff;color:#0071e3}form{display:inline}"
    "table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.25rem .5rem;"
    "border-bottom:1px solid #e5e5ea;font-size:.9rem}code{font-size:.9rem}"
    "body.wide{max-width:72rem}button[disabled]{opacity:.5;cursor:not-allowed}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()

CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def esc(value: object) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return escape("" if value is None else str(value), quote=True)


def when(ts: float | None) -> str:
    """A time for people (UTC, to the minute)."""
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


_WIDE = ' class="wide"'


def render(title: str, body: str, *, status: int = 200, wide: bool = False) -> Response:
    """A complete page around `body` (already-escaped HTML) with the security headers;
    `wide`: room for tables (the admin page)."""
    document = (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<title>{esc(title)} · markco</title><style>{_CSS}</style></head>"
        f"<body{_WIDE if wide else ''}><main>{body}</main></body></html>")
    return Response(document, status=status, headers=SECURITY_HEADERS,
                    content_type="text/html; charset=utf-8")


def _button_form(action: str, label: str, *, secondary: bool = False,
                 form_token: str | None = None) -> str:
    """A one-button form; `form_token`: the session's token (every form of a page shown to a
    logged-in person carries it, see `web/request_auth.py`)."""
    cls = " class=\"secondary\"" if secondary else ""
    hidden = ("" if form_token is None else
              f"<input type=\"hidden\" name=\"csrf\" value=\"{esc(form_token)}\">")
    return (f"<form method=\"post\" action=\"{esc(action)}\">{hidden}"
            f"<button type=\"submit\"{cls}>{esc(label)}</button></form>")


def message_page(title: str, message: str, *, status: int, link: tuple[str, str] | None = (
        "/login", "Back to the login page")) -> Response:
    """A page that says what went wrong and what to do."""
    kind = "error" if status >= 400 else ""
    body = f"<h1>{esc(title)}</h1><div class=\"box {kind}\"><p>{esc(message)}</p></div>"
    if link is not None:
        body += f"<p><a class=\"button\" href=\"{esc(link[0])}\">{esc(link[1])}</a></p>"
    return render(title, body, status=status)


def login_page(providers: Sequence[tuple[str, str]], *, notice: str | None = None,
               prefix: str = "/login", next_path: str | None = None) -> Response:
    """The provider buttons, or how to get a console login link when there is none;
    `next_path` (already checked safe): where each button returns the browser after login."""
    then = "" if next_path is None else "?next=" + quote(next_path, safe="")
    body = "<h1>Log in to markco</h1>"
    if notice:
        body += f"<div class=\"box\"><p>{esc(notice)}</p></div>"
    if providers:
        body += "<p>" + "".join(
            f"<a class=\"button\" href=\"{esc(prefix)}/{esc(name)}{esc(then)}\">Log in with "
            f"{esc(display)}</a>" for name, display in providers) + "</p>"
    else:
        body += ("<div class=\"box\"><p>This markco has no login provider configured. "
                 "Use the one-time link printed by the daemon at start, or print a new one "
                 "on the server:</p><p><code>markco login-link USER --config FILE</code></p>"
                 "</div>")
    return render("Log in", body)


def _workspace_section(user: User, workspace: Any, form_token: str | None,
                       snapshots: Sequence[Any] = ()) -> str:
    """The editor section: the state of BOTH workloads (running, sleeping, waking, failed...),
    what is happening, open / start / stop / restart / sleep / wake, and the snapshots."""
    if workspace is None:
        return (f"<p>Your editor: <a href=\"/u/{esc(user.id)}/\">/u/{esc(user.id)}/</a></p>")
    label = getattr(workspace, "summary", None) or (
        "ready" if workspace.ready else "not started")
    html = (f"<h2>Your workspace</h2><p>Editor and Python runtime: <strong>{esc(label)}"
            "</strong>")
    if workspace.message and not workspace.ready:
        html += f" — <span class=\"muted\">{esc(workspace.message)}</span>"
    html += "</p>"
    notice = getattr(workspace, "notice", None)
    if notice:
        html += f"<div class=\"box\"><p>{esc(notice)}</p></div>"
    for w in (workspace.runtime, workspace.editor):
        if w.reason and w.state is not None and w.state.value == "failed":
            html += (f"<div class=\"box error\"><p>The {esc(w.role.value)} failed: "
                     f"{esc(w.reason)}</p></div>")
    if workspace.runtime.oom_kills:
        html += (f"<p class=\"muted\">Your runtime ran out of memory "
                 f"{workspace.runtime.oom_kills} time(s).</p>")
    html += f"<p><a class=\"button\" href=\"/u/{esc(user.id)}/\">Open the editor</a></p>"
    asleep = label == "sleeping"
    if asleep:
        html += _button_form("/dashboard/workspace/wake", "Wake", form_token=form_token)
    elif workspace.ready or workspace.operation is not None:
        html += (_button_form("/dashboard/workspace/sleep", "Sleep", secondary=True,
                              form_token=form_token)
                 + _button_form("/dashboard/workspace/restart", "Restart", secondary=True,
                                form_token=form_token)
                 + _button_form("/dashboard/workspace/stop", "Stop", secondary=True,
                                form_token=form_token))
    else:
        html += _button_form("/dashboard/workspace/start", "Start", form_token=form_token)
    named = [s for s in snapshots if getattr(s, "kind", "named") == "named"]
    if named or workspace.ready:
        html += "<h3>Snapshots</h3>"
        rows = "".join(
            f"<tr><td>{esc(s.name)}</td><td>{when(s.created_at)}</td>"
            f"<td>{s.size_bytes / (1 << 20):.1f} MiB</td><td>"
            + _button_form(f"/dashboard/workspace/snapshots/{esc(s.id)}/restore", "Restore",
                           secondary=True, form_token=form_token)
            + _button_form(f"/dashboard/workspace/snapshots/{esc(s.id)}/delete", "Delete",
                           secondary=True, form_token=form_token)
            + "</td></tr>" for s in named)
        if rows:
            html += ("<table><tr><th>Name</th><th>Taken</th><th>Size</th><th></th></tr>"
                     f"{rows}</table>")
        if workspace.ready:
            hidden = ("" if form_token is None else
                      f"<input type=\"hidden\" name=\"csrf\" value=\"{esc(form_token)}\">")
            html += ("<form method=\"post\" action=\"/dashboard/workspace/snapshots\">"
                     f"{hidden}<input name=\"name\" required maxlength=\"64\" "
                     "pattern=\"[A-Za-z0-9][A-Za-z0-9._\\-]*\" placeholder=\"snapshot name\" "
                     "aria-label=\"Snapshot name\"> <button type=\"submit\" "
                     "class=\"secondary\">Take a snapshot</button></form>")
    return html


def _projects_section(user: User, projects: Sequence[Any], user_page: bool) -> str:
    """The user's projects and where each is published (`ProjectListing`s); `user_page`:
    `/@<username>` lists them."""
    if not projects:
        return ("<h2>Your published pages</h2><p class=\"muted\">No project yet. A folder "
                "under <code>Projects/</code> with a <code>mrmd.md</code> is a project; set "
                "<code>visibility: public</code> in it to publish it for everyone.</p>")
    items = "".join(
        f"<li><a href=\"{esc(p.path)}\">{esc(p.title)}</a> <span class=\"muted\">"
        f"<code>{esc(p.path)}</code> — "
        + ("public" if p.public else "private: you, the people you invited, administrators")
        + "</span></li>" for p in projects)
    html = "<h2>Your published pages</h2><ul>" + items + "</ul>"
    if user_page:
        html += (f"<p class=\"muted\">All of them: <a href=\"/@{esc(user.username)}\">"
                 f"/@{esc(user.username)}</a></p>")
    return html


def _invites_section(invites: Sequence[tuple[Invite, str]], form_token: str | None) -> str:
    """The invites the user sent: (invite, state) pairs, newest first; live ones revocable."""
    if not invites:
        return ""
    rows = "".join(
        f"<tr><td>{esc(i.project)}</td><td>{esc(i.role.value)}</td><td>{esc(state)}</td>"
        f"<td>{i.uses} of {i.max_uses}</td><td>{when(i.expires_at)}</td><td>"
        + (_button_form(f"/dashboard/invites/{esc(i.id)}/revoke", "Revoke", secondary=True,
                        form_token=form_token) if state == "live" else "")
        + "</td></tr>" for i, state in invites)
    return ("<h2>Your invites</h2><table><tr><th>Project</th><th>Role</th><th>State</th>"
            f"<th>Used</th><th>Expires</th><th></th></tr>{rows}</table>")


def dashboard_page(user: User, principal: Principal, *, sessions: Sequence[Session],
                   current_session_id: str | None, identities: Iterable[Identity],
                   held: Sequence[Grant], owners: dict[str, User],
                   workspace: Any = None,
                   admin_entries: Sequence[AdminEntry] = (),
                   form_token: str | None = None,
                   snapshots: Sequence[Any] = (),
                   projects: Sequence[Any] | None = None, user_page: bool = True,
                   invites: Sequence[tuple[Invite, str]] = ()) -> Response:
    """Who you are, your workspace (when compute runs), your published pages (`projects`:
    None when publishing is off), the invites you sent, your sessions, what is shared with
    you, and which administrators entered your editor."""
    body = (f"<h1>Hello, {esc(user.name or user.username)}</h1>"
            f"<p class=\"muted\">Logged in as <strong>@{esc(user.username)}</strong>"
            f"{' · ' + esc(user.email) if user.email else ''} · plan {esc(user.plan)}"
            f"{' · <strong>administrator</strong>' if user.is_admin else ''}</p>")
    linked = ", ".join(f"{esc(i.provider)}" for i in identities)
    if linked:
        body += f"<p class=\"muted\">Linked logins: {linked}</p>"
    if user.is_admin:
        body += "<p><a href=\"/admin\">Administration</a></p>"
    body += _workspace_section(user, workspace, form_token, snapshots)
    if projects is not None:
        body += _projects_section(user, projects, user_page)
    body += (_invites_section(invites, form_token)
             + "<p>" + _button_form("/logout", "Log out", form_token=form_token) + "</p>")
    rows = "".join(
        f"<tr><td>{esc(s.user_agent or 'unknown browser')}"
        f"{' <strong>(this one)</strong>' if s.id == current_session_id else ''}</td>"
        f"<td>{when(s.created_at)}</td><td>{when(s.expires_at)}</td></tr>" for s in sessions)
    body += ("<h2>Your sessions</h2><table><tr><th>Browser</th><th>Since</th>"
             f"<th>Expires</th></tr>{rows}</table>"
             + _button_form("/logout-all", "Log out everywhere", secondary=True,
                            form_token=form_token))
    if held:
        items = "".join(
            f"<li><strong>{esc(g.project)}</strong> of @"
            f"{esc(owners[g.owner_id].username if g.owner_id in owners else '?')} — "
            f"{esc(g.role.value)}</li>" for g in held)
        body += f"<h2>Shared with you</h2><ul>{items}</ul>"
    if admin_entries:
        items = "".join(
            f"<li>@{esc(e.admin)} entered your editor on {when(e.entered_at)}"
            f"{', for access until ' + when(e.expires_at) if e.expires_at else ''}</li>"
            for e in admin_entries)
        body += ("<h2>Administrator access</h2><p class=\"muted\">Administrators who entered "
                 f"your editor (each entry can run code as you).</p><ul>{items}</ul>")
    return render("Dashboard", body)


def invite_page(*, project: str, role: str, owner: User, expires_at: float | None,
                state: str, token: str, viewer: Principal | None,
                providers: Sequence[tuple[str, str]],
                form_token: str | None = None) -> Response:
    """The invite as its recipient sees it, with what the role means, and the way to
    accept it (log in first when needed)."""
    who = esc(owner.name or owner.username)
    body = (f"<h1>Invitation to {esc(project)}</h1><p>{who} (@{esc(owner.username)}) invites "
            f"you as <strong>{esc(role)}</strong> of the project <strong>{esc(project)}"
            f"</strong>.</p>")
    if role == "editor":
        body += ("<div class=\"box warn\"><p><strong>An editor invite makes you a full "
                 f"collaborator in {who}'s editor.</strong> Anyone in that editor can run code "
                 f"as {who}, with access to all of their files — accept only if you trust each "
                 "other.</p></div>")
    else:
        body += ("<div class=\"box\"><p>A viewer invite lets you read this project's "
                 "published pages, even when they are not public. It does not let you into "
                 f"{who}'s editor.</p></div>")
    if state != "live":
        reasons = {"expired": "This invite has expired.",
                   "exhausted": "This invite has already been used up.",
                   "revoked": "This invite was revoked."}
        body += (f"<div class=\"box error\"><p>{esc(reasons.get(state, state))} Ask "
                 f"{who} for a new one.</p></div>")
        return render("Invitation", body, status=410)
    body += f"<p class=\"muted\">Valid until {when(expires_at)}.</p>"
    if viewer is None:
        if providers:
            body += "<p>Log in to accept:</p><p>" + "".join(
                f"<a class=\"button\" href=\"/invites/{esc(token)}/login/{esc(name)}\">"
                f"Log in with {esc(display)}</a>" for name, display in providers) + "</p>"
        else:
            body += "<p>Log in first (with a login link), then open this invite again.</p>"
    else:
        body += (f"<p>You are logged in as @{esc(viewer.username)}.</p>"
                 + _button_form(f"/invites/{token}/accept", f"Accept as {role}",
                                form_token=form_token))
    return render("Invitation", body)


def accepted_page(*, project: str, role: str, owner: User) -> Response:
    """After accepting: what the person can now do."""
    if role == "editor":
        what = (f"You can now open {esc(owner.name or owner.username)}'s editor: "
                f"<a href=\"/u/{esc(owner.id)}/\">/u/{esc(owner.id)}/</a>.")
    else:
        what = (f"You can now read <a href=\"/@{esc(owner.username)}/{esc(project)}\">"
                f"/@{esc(owner.username)}/{esc(project)}</a>.")
    body = (f"<h1>Invitation accepted</h1><div class=\"box\"><p>You are {esc(role)} of "
            f"<strong>{esc(project)}</strong>. {what}</p></div>"
            "<p><a class=\"button\" href=\"/dashboard\">Go to your dashboard</a></p>")
    return render("Invitation accepted", body)


@dataclass(frozen=True)
class AdminRuntime:
    """One user's workloads as the admin page lists them (both records, one row)."""

    user_id: str
    username: str
    state: str                 # the workspace summary: running, sleeping, failed...
    host: str
    backend: str
    memory_bytes: int | None   # the runtime's working set, when it could be sampled
    memory_limit: int | None
    last_activity: float | None
    roles: str                 # "editor, runtime"


@dataclass(frozen=True)
class AdminHost:
    """A host workloads run on, with what it holds now."""

    name: str
    backend: str
    workloads: int
    running: int
    sleeping: int
    memory_bytes: int | None
    checkpoints: bool | None   # None: unknown (no compute here)
    notes: str = ""


MOVE_UNAVAILABLE = ("Moving a runtime to another host is not built yet: this markco runs "
                    "workloads on one host.")
MOVE_AVAILABLE = ("Moving keeps the variables: the runtime is checkpointed, streamed to the "
                  "other host and restored there; a failed move leaves it where it was.")


def _mib(value: int | None) -> str:
    return "—" if value is None else f"{value / (1 << 20):.0f} MiB"


def admin_users_section(users: Sequence[User], *, next_cursor: str | None, me: str,
                        form_token: str | None) -> str:
    """The users, each with an audited way into their editor."""
    rows = "".join(
        f"<tr><td>@{esc(u.username)}{' (admin)' if u.is_admin else ''}"
        f"{' — disabled' if u.disabled else ''}</td><td>{esc(u.email or '')}</td>"
        f"<td>{esc(u.plan)}</td><td>"
        + ("" if u.id == me else _button_form(f"/admin/enter/{u.id}", "Enter editor",
                                               secondary=True, form_token=form_token))
        + "</td></tr>" for u in users)
    html = ("<section id=\"users\"><h2>Users</h2><p class=\"muted\">Entering a user's editor "
            "lets you run code as them; each entry is recorded in the event log and lasts a "
            "limited time.</p><table><tr><th>User</th><th>Email</th><th>Plan</th><th></th></tr>"
            f"{rows}</table>")
    if next_cursor:
        html += f"<p><a href=\"/admin?cursor={esc(quote(next_cursor, safe=''))}\">Next page</a></p>"
    return html + "</section>"


def _move_form(r: AdminRuntime, move_hosts: Sequence[str], form_token: str | None) -> str:
    """Move `r` to another of `move_hosts` (several hosts, issue 16)."""
    options = "".join(f"<option value=\"{esc(h)}\">{esc(h)}</option>"
                      for h in move_hosts if h != r.host)
    hidden = ("" if form_token is None else
              f"<input type=\"hidden\" name=\"csrf\" value=\"{esc(form_token)}\">")
    return (f"<form method=\"post\" action=\"/admin/runtimes/{esc(r.user_id)}/move\">"
            f"{hidden}<select name=\"to\" aria-label=\"Move to\">{options}</select>"
            f"<button type=\"submit\" class=\"secondary\">Move</button></form>")


def admin_runtimes_section(runtimes: Sequence[AdminRuntime], *,
                           form_token: str | None, move_hosts: Sequence[str] = ()) -> str:
    """Live workloads: state, host, memory, last activity, and stop / sleep / wake; move
    when there are several hosts (`move_hosts`)."""
    if not runtimes:
        return ("<section id=\"runtimes\"><h2>Runtimes</h2><p class=\"muted\">No workload is "
                "live.</p></section>")
    rows = []
    for r in runtimes:
        actions = ""
        if r.state == "sleeping":
            actions += _button_form(f"/admin/runtimes/{r.user_id}/wake", "Wake",
                                    secondary=True, form_token=form_token)
        elif r.state not in ("stopped", "not started"):
            actions += _button_form(f"/admin/runtimes/{r.user_id}/sleep", "Sleep",
                                    secondary=True, form_token=form_token)
        actions += _button_form(f"/admin/runtimes/{r.user_id}/stop", "Stop",
                                secondary=True, form_token=form_token)
        if len(move_hosts) > 1 and r.state in ("running", "sleeping", "ready"):
            actions += _move_form(r, move_hosts, form_token)
        elif len(move_hosts) <= 1:
            actions += (f"<button type=\"button\" class=\"secondary\" disabled "
                        f"title=\"{esc(MOVE_UNAVAILABLE)}\">Move</button>")
        limit = f" of {_mib(r.memory_limit)}" if r.memory_limit else ""
        rows.append(
            f"<tr data-user=\"{esc(r.user_id)}\"><td>@{esc(r.username)}</td>"
            f"<td>{esc(r.state)}</td><td>{esc(r.host)} <span class=\"muted\">"
            f"({esc(r.backend)})</span></td><td>{_mib(r.memory_bytes)}{esc(limit)}</td>"
            f"<td>{when(r.last_activity)}</td><td>{actions}</td></tr>")
    return ("<section id=\"runtimes\"><h2>Runtimes</h2><p class=\"muted\">Sleeping keeps the "
            f"variables (a checkpoint); stopping loses them. "
            f"{esc(MOVE_UNAVAILABLE if len(move_hosts) <= 1 else MOVE_AVAILABLE)}</p>"
            "<table><tr><th>User</th><th>State</th><th>Host</th><th>Memory</th>"
            f"<th>Last activity</th><th></th></tr>{''.join(rows)}</table></section>")


def admin_hosts_section(hosts: Sequence[AdminHost]) -> str:
    """The hosts workloads run on."""
    if not hosts:
        return ("<section id=\"hosts\"><h2>Hosts</h2><p class=\"muted\">No compute is "
                "configured: this markco runs no workloads.</p></section>")
    rows = "".join(
        f"<tr><td>{esc(h.name)}</td><td>{esc(h.backend)}</td><td>{h.workloads}</td>"
        f"<td>{h.running}</td><td>{h.sleeping}</td><td>{_mib(h.memory_bytes)}</td>"
        f"<td>{'unknown' if h.checkpoints is None else ('yes' if h.checkpoints else 'no')}"
        f"</td><td class=\"muted\">{esc(h.notes)}</td></tr>" for h in hosts)
    return ("<section id=\"hosts\"><h2>Hosts</h2><table><tr><th>Host</th><th>Backend</th>"
            "<th>Workloads</th><th>Running</th><th>Sleeping</th><th>Memory</th>"
            f"<th>Checkpoints</th><th></th></tr>{rows}</table></section>")


def admin_events_section(events: Sequence[Event], usernames: dict[str, str]) -> str:
    """The newest events, newest first."""
    if not events:
        return ("<section id=\"events\"><h2>Recent events</h2><p class=\"muted\">None yet."
                "</p></section>")
    rows = "".join(
        f"<tr><td>{when(e.created_at)}</td><td><code>{esc(e.type)}</code></td>"
        f"<td>{'@' + esc(usernames.get(e.user_id, e.user_id)) if e.user_id else ''}</td>"
        f"<td class=\"muted\">{esc(_event_summary(e.data))}</td></tr>" for e in events)
    return ("<section id=\"events\"><h2>Recent events</h2><table><tr><th>When</th>"
            f"<th>Type</th><th>User</th><th>Details</th></tr>{rows}</table></section>")


def _event_summary(data: dict[str, Any], limit: int = 160) -> str:
    text = ", ".join(f"{k}={v}" for k, v in data.items() if not isinstance(v, (dict, list)))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def admin_plans_section(users: Sequence[User], plans: Sequence[str], *,
                        form_token: str | None) -> str:
    """A plan form per user (issue 12): `POST /admin/users/<id>/plan` (the compute plugin's
    route), the user's current plan selected. For `admin_page`'s `extra_sections`."""
    hidden = ("" if form_token is None else
              f"<input type=\"hidden\" name=\"csrf\" value=\"{esc(form_token)}\">")
    rows = []
    for u in users:
        options = "".join(
            f"<option value=\"{esc(p)}\"{' selected' if p == u.plan else ''}>{esc(p)}</option>"
            for p in plans)
        rows.append(
            f"<tr><td>@{esc(u.username)}</td><td>"
            f"<form method=\"post\" action=\"/admin/users/{esc(u.id)}/plan\">{hidden}"
            f"<select name=\"plan\" aria-label=\"Plan of @{esc(u.username)}\">{options}"
            "</select> <button type=\"submit\" class=\"secondary\">Change plan</button>"
            "</form></td></tr>")
    return ("<section id=\"plans\"><h2>Plans</h2><p class=\"muted\">A plan sets the limits of "
            "a user's runtime; a change is recorded in the event log and applies to a running "
            "runtime at once.</p><table><tr><th>User</th><th>Plan</th></tr>"
            f"{''.join(rows)}</table></section>")


def admin_page(users: Sequence[User], *, next_cursor: str | None, me: str,
               form_token: str | None = None, runtimes: Sequence[AdminRuntime] = (),
               hosts: Sequence[AdminHost] = (), events: Sequence[Event] = (),
               usernames: dict[str, str] | None = None,
               extra_sections: Sequence[str] = (), move_hosts: Sequence[str] = ()
               ) -> Response:
    """Runtimes, hosts, users and recent events, each a `<section>` of its own;
    `extra_sections` (already-escaped HTML) are appended, so another feature adds its own
    block (its forms must carry `form_token`) without touching these."""
    body = ("<h1>Administration</h1><p><a href=\"/dashboard\">Your dashboard</a></p>"
            + admin_runtimes_section(runtimes, form_token=form_token,
                                     move_hosts=move_hosts)
            + admin_hosts_section(hosts)
            + admin_users_section(users, next_cursor=next_cursor, me=me, form_token=form_token)
            + admin_events_section(events, usernames or {})
            + "".join(extra_sections))
    return render("Administration", body, wide=True)
