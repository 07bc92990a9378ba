"""The web page: server-rendered HTML (templates/page.html, no build step) that
reads with JavaScript off. `/` is the queue with progress and the backends
with GPU memory (a small script refreshes it); `/gallery` the finished images
with filters (requester, style, model, date, text); `/jobs/{id}` one job with
its prompts, parameters, timeline, and forms to cancel, retry, run again and
compose with another title; `/login` stores a token in a strict cookie.
Every value is escaped; forms only POST, and only from this origin.
"""

from __future__ import annotations

import asyncio
import html
import string
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from zmm.serve import auth
from zmm.serve.auth import request_principal
from zmm.serve.core import Service
from zmm.serve.guard import ApiError

PAGE = string.Template((Path(__file__).parent / "templates" / "page.html").read_text("utf-8"))
GIB = 1024**3
REFRESH_JS = """<script>
setInterval(async () => {
  const r = await fetch("/?part=live", {headers: {"Accept": "text/html"}});
  if (r.ok) document.getElementById("live").innerHTML = await r.text();
}, 1000);
</script>"""


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def page(title: str, body: str, script: str = "") -> HTMLResponse:
    return HTMLResponse(PAGE.substitute(title=e(title), body=body, script=script),
                        headers={"Cache-Control": "no-store",
                                 "Content-Security-Policy": "default-src 'self'; "
                                 "style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                                 "img-src 'self'; frame-ancestors 'none'"})


def button(action: str, label: str) -> str:
    return (f'<form class="inline" method="post" action="{e(action)}">'
            f'<button type="submit">{e(label)}</button></form>')


def job_link(job: Any) -> str:
    return f'<a href="/jobs/{e(job.id)}">{e(job.id)}</a>'


class Pages:
    def __init__(self, service: Service) -> None:
        self.service = service

    def routes(self) -> list[Route]:
        return [Route("/", self.home, methods=["GET"]),
                Route("/gallery", self.gallery, methods=["GET"]),
                Route("/jobs/{job_id}", self.job, methods=["GET"]),
                Route("/jobs/{job_id}/{action}", self.act, methods=["POST"]),
                Route("/login", self.login, methods=["GET", "POST"])]

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- the queue -----------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        live = await self.run(self._live)
        if request.query_params.get("part") == "live":
            return HTMLResponse(live, headers={"Cache-Control": "no-store"})
        return page("Queue", f'<div id="live">{live}</div>', REFRESH_JS)

    def _live(self) -> str:
        from zmm.views import queue as view

        store = self.service.store()
        shown = view.read(store, self.service.settings)
        rows = []
        for job in shown.running:
            bar = (f'<progress value="{job.progress_value or 0}" max="{job.progress_max}">'
                   f'</progress>' if job.progress_max else "")
            rows.append(f'<tr class="running"><td>run</td><td>{job_link(job)}</td>'
                        f'<td>{e(job.priority)}</td><td>{e(job.requester)}</td>'
                        f'<td>{e(job.phase or job.status)} {bar}</td><td>{e(job.prompt[:80])}</td>'
                        f'<td>{button(f"/jobs/{job.id}/cancel", "Cancel")}</td></tr>')
        for item in shown.queued:
            job = item.job
            why = f' <span class="muted">{e(item.waiting_reason)}</span>' if item.waiting_reason else ""
            rows.append(f'<tr class="queued"><td>{item.position}</td><td>{job_link(job)}</td>'
                        f'<td>{e(job.priority)}</td><td>{e(job.requester)}</td>'
                        f'<td>queued{why}</td><td>{e(job.prompt[:80])}</td>'
                        f'<td>{button(f"/jobs/{job.id}/cancel", "Cancel")}</td></tr>')
        queue = ("<table><tr><th>pos</th><th>job</th><th>priority</th><th>requester</th>"
                 "<th>state</th><th>prompt</th><th></th></tr>" + "".join(rows) + "</table>"
                 if rows else '<p class="muted">The queue is empty.</p>')
        paused = "<p><strong>The queue is paused.</strong></p>" if shown.paused else ""
        workers = "" if shown.workers else '<p class="muted">No worker is running.</p>'
        backends = "".join(
            f"<tr><td>{e(b['name'])}</td><td>{e(b['state'])}</td><td>{e(b['gpu'])}</td>"
            f"<td>{_memory(b)}</td><td>{e(b['loaded_model'])}</td><td>{e(b['jobs_running'])}"
            f"</td><td>{e(b['last_error'])}</td></tr>"
            for b in self.service.backends())
        recent, _ = self.service.history(statuses=("succeeded", "failed", "cancelled"), limit=8)
        return (f"{paused}{workers}<h2>Jobs</h2>{queue}<h2>Backends</h2><table><tr><th>name"
                "</th><th>state</th><th>GPU</th><th>memory free / total</th><th>model</th>"
                f"<th>running</th><th>last error</th></tr>{backends}</table>"
                f"<h2>Finished lately</h2>{self._grid(recent)}")

    # -- the gallery ----------------------------------------------------------------

    async def gallery(self, request: Request) -> Response:
        query = request.query_params
        wanted = {key: (query.get(key) or "").strip()[:200]
                  for key in ("requester", "style", "model", "since", "until", "text")}
        for key in ("since", "until"):
            if wanted[key] and not _is_date(wanted[key]):
                raise ApiError(400, f"{key}: a date as YYYY-MM-DD", param=key)
        jobs, total = await self.run(
            self.service.history, statuses=("succeeded",),
            requester=wanted["requester"] or None, style=wanted["style"] or None,
            model=wanted["model"] or None, search=wanted["text"] or None,
            since_iso=wanted["since"] or None,
            until_iso=(wanted["until"] + "T99") if wanted["until"] else None, limit=60)
        fields = "".join(
            f'<label>{name} <input name="{name}" value="{e(wanted[name])}"'
            f'{" type=date" if name in ("since", "until") else ""}></label> '
            for name in wanted)
        body = (f'<form method="get" action="/gallery">{fields}<button>Filter</button></form>'
                f'<p class="muted">{len(jobs)} of {total}</p>{self._grid(jobs)}')
        return page("Gallery", body)

    def _grid(self, jobs: list[Any]) -> str:
        items = []
        for job in jobs:
            image = (f'<img loading="lazy" alt="{e(job.prompt[:80])}" '
                     f'src="/api/jobs/{e(job.id)}/image?thumb=1">' if job.thumbnail_path
                     else f'<div class="muted">{e(job.status)}</div>')
            items.append(f'<figure class="job"><a href="/jobs/{e(job.id)}">{image}</a>'
                         f'<figcaption>{e(job.requester)} · {e(job.prompt[:60])}</figcaption>'
                         "</figure>")
        return f'<div class="grid">{"".join(items)}</div>' if items else \
            '<p class="muted">Nothing here yet.</p>'

    # -- one job ----------------------------------------------------------------------

    async def job(self, request: Request) -> Response:
        detail = await self.run(self.service.detail, request.path_params["job_id"])
        job, params, events = detail["job"], detail["params"], detail["events"]
        image = (f'<p><a href="/api/jobs/{e(job["id"])}/image"><img alt="the image" '
                 f'style="max-width:100%" src="/api/jobs/{e(job["id"])}/image"></a></p>'
                 if job["status"] == "succeeded" and job["outputs"] else "")
        shown = ("status", "phase", "priority", "requester", "style", "model", "width", "height",
                 "seed", "steps", "backend", "generation_time_s", "created_at", "completed_at",
                 "error_message", "source_job_id")
        rows = "".join(f"<tr><th>{e(key)}</th><td>{e(job.get(key))}</td></tr>" for key in shown
                       if job.get(key) not in (None, ""))
        timeline = "".join(f"<tr><td>{e(ev['at'])}</td><td>{e(ev['kind'])}</td>"
                           f"<td>{e(ev.get('message'))}</td></tr>" for ev in events)
        actions = []
        if job["status"] in ("queued", "running"):
            actions.append(button(f"/jobs/{job['id']}/cancel", "Cancel"))
        if job["status"] in ("failed", "cancelled"):
            actions.append(button(f"/jobs/{job['id']}/retry", "Retry"))
        actions.append(button(f"/jobs/{job['id']}/again", "Run again"))
        compose = ""
        if job["status"] == "succeeded" and job["outputs"]:
            compose = (f'<form method="post" action="/jobs/{e(job["id"])}/compose">'
                       '<label>Title <input name="title" required maxlength="500"></label> '
                       '<label>Subtitle <input name="subtitle" maxlength="500"></label> '
                       '<button type="submit">Compose with another title</button></form>')
        body = (f"{image}<p>{' '.join(actions)}</p>{compose}<h2>Prompt</h2><pre>{e(job['prompt'])}"
                f"</pre><h2>Negative</h2><pre>{e(job['negative_prompt'])}</pre>"
                f"<h2>Parameters</h2><table>{rows}</table><pre>{e(_params_text(params))}</pre>"
                f"<h2>Timeline</h2><table>{timeline}</table>")
        return page(f"Job {job['id']}", body)

    async def act(self, request: Request) -> Response:
        _same_origin(request)
        job_id, action = request.path_params["job_id"], request.path_params["action"]
        principal = request_principal(request)
        target = f"/jobs/{job_id}"
        if action == "cancel":
            await self.run(self.service.cancel, job_id, principal)
        elif action == "retry":
            await self.run(self.service.retry, job_id, principal)
        elif action == "again":
            jobs = await self.run(self.service.again, job_id, principal)
            target = f"/jobs/{jobs[0].id}"
        elif action == "compose":
            form = await request.form(max_files=0, max_fields=5)
            raw = {key: str(form.get(key) or "") or None for key in ("title", "subtitle")}
            made = await self.run(self.service.compose, job_id, raw, principal)
            target = f"/jobs/{made.id}"
        else:
            raise ApiError(404, "no such action", kind="not_found_error")
        return RedirectResponse(target, status_code=303)

    async def login(self, request: Request) -> Response:
        if request.method == "POST":
            _same_origin(request)
            form = await request.form(max_files=0, max_fields=2)
            token = str(form.get("token") or "").strip()
            if await self.run(auth.Tokens(self.service).principal, token) is None:
                return page("Sign in", '<p class="error">That token is not valid.</p>'
                            + _LOGIN_FORM)
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(auth.COOKIE, token, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https")
            return response
        return page("Sign in", _LOGIN_FORM)


_LOGIN_FORM = ('<form method="post" action="/login"><label>Token <input name="token" '
               'type="password" required></label> <button type="submit">Sign in</button></form>'
               '<p class="muted">Make one with <code>zmm serve token create NAME</code>.</p>')


def _same_origin(request: Request) -> None:
    """A form post must come from this server's own pages (no cross-site forms)."""
    origin = request.headers.get("origin")
    if origin is not None and origin != "null" and \
            origin.rstrip("/") != str(request.base_url).rstrip("/"):
        raise ApiError(403, "origin: forms are accepted from this server's pages only",
                       kind="permission_error")


def _memory(backend: dict[str, Any]) -> str:
    free, total = backend.get("vram_free_bytes"), backend.get("vram_total_bytes")
    if free is None or total is None:
        return ""
    return f"{free / GIB:.1f} / {total / GIB:.1f} GB"


def _is_date(text: str) -> bool:
    import datetime

    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


def _params_text(params: dict[str, Any]) -> str:
    skipped = ("graph", "user_prompt")
    return "\n".join(f"{key}: {value}" for key, value in sorted(params.items())
                     if key not in skipped)

