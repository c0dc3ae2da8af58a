"""The HTML face of every GET, for a browser (`Accept: text/html` or `f=html`): the same documents as the JSON, made
readable; a run form per process, drawn from its description by the API's own script (`static/form.js`); each job's
status, results, last log lines and quicklooks.

Nothing is fetched from anywhere else, and the pages run no inline script: their Content-Security-Policy allows this
API's own scripts alone (`protection.PAGE_POLICY`).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from jinja2 import DictLoader, Environment, select_autoescape
from markupsafe import Markup

BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{% block title %}granary-flows{% endblock %}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">{% block head %}{% endblock %}
<link rel="stylesheet" href="{{ base }}/static/granary.css">
</head><body><header><a href="{{ base }}/?f=html">granary-flows</a><a href="{{ base }}/processes?f=html">processes</a>
<a href="{{ base }}/jobs?f=html">jobs</a><a href="{{ base }}/api.html">API</a>
{% if who %}<span class="who">signed in as {{ who.subject }}</span><a href="{{ base }}/logout">sign out</a>
{% else %}<a href="{{ base }}/login">sign in</a>{% endif %}</header>
<main>{% block body %}{% endblock %}</main></body></html>"""

PAGES = {
    "base": BASE,
    "landing": """{% extends "base" %}{% block body %}<h1>{{ doc.title }}</h1><p>{{ doc.description }}</p>
{% if doc.authentication %}<p class="failed">Authentication is {{ doc.authentication }}</p>{% endif %}
<ul>{% for link in doc.links %}<li><a href="{{ link.href }}">{{ link.title }}</a> <span class="hint">{{ link.rel }}
</span></li>{% endfor %}</ul>{% endblock %}""",
    "conformance": """{% extends "base" %}{% block body %}<h1>Conformance</h1><ul>{% for c in doc.conformsTo %}
<li>{{ c }}</li>{% endfor %}</ul>{% endblock %}""",
    "processes": """{% extends "base" %}{% block body %}<h1>Processes</h1><table><tr><th>process</th><th>title</th>
<th>version</th></tr>{% for p in doc.processes %}<tr><td><a href="{{ base }}/processes/{{ p.id }}?f=html">{{ p.id }}
</a></td><td>{{ p.title }}</td><td>{{ p.version }}</td></tr>{% endfor %}</table>{{ paging(doc) }}{% endblock %}""",
    "process": """{% extends "base" %}{% block body %}<h1>{{ doc.title }}</h1><p>{{ doc.description }}</p>
<p class="hint">{{ doc.id }} {{ doc.version }}</p><h2>Run it</h2>
<form id="run" data-execute="{{ base }}/processes/{{ doc.id }}/execution"><div id="fields"></div>
<p><button type="submit">Execute</button></p><p id="said" class="failed" role="alert"></p></form>
<script type="application/json" id="process">{{ description }}</script>
<script src="{{ base }}/static/form.js"></script>
<h2>Outputs</h2><ul>{% for name, output in doc.outputs.items() %}<li>{{ output.title }}
<span class="hint">{{ name }}</span></li>{% endfor %}</ul>{% endblock %}""",
    "jobs": """{% extends "base" %}{% block body %}<h1>Jobs</h1><form method="get"><input type="hidden" name="f"
value="html"><label class="inline">process <input name="processID"></label> <label class="inline">status
<select name="status"><option value=""></option>{% for s in ["accepted","running","successful","failed","dismissed"] %}
<option>{{ s }}</option>{% endfor %}</select></label> <button>filter</button></form><table><tr><th>job</th>
<th>process</th><th>status</th><th>progress</th><th>created</th></tr>{% for job in doc.jobs %}<tr><td>
<a href="{{ base }}/jobs/{{ job.jobID }}?f=html">{{ job.jobID }}</a></td><td>{{ job.processID }}</td>
<td class="status {{ job.status }}">{{ job.status }}</td><td>{{ job.progress }}%</td><td>{{ job.created }}</td></tr>
{% endfor %}</table>{{ paging(doc) }}{% endblock %}""",
    "job": """{% extends "base" %}{% block body %}<h1>Job {{ doc.jobID }}</h1><p>{{ doc.processID }}:
<span id="status" class="status {{ doc.status }}"
data-refresh="{{ 1 if doc.status in ('accepted', 'running') else 0 }}">
{{ doc.status }}</span> ({{ doc.progress }}%)</p><p>{{ doc.message }}</p><table><tr><td>created</td>
<td>{{ doc.created }}</td></tr><tr><td>started</td><td>{{ doc.started }}</td></tr><tr><td>finished</td>
<td>{{ doc.finished }}</td></tr>{% if doc.submitter %}<tr><td>submitted by</td><td>{{ doc.submitter }}</td></tr>
{% endif %}</table><p>{% for link in doc.links %}<a href="{{ link.href }}">{{ link.title }}</a> · {% endfor %}
{% if doc.stacItem %}<a href="{{ doc.stacItem }}">STAC Item</a>{% endif %}</p>
{% if results %}<h2>Results</h2><ul id="results">{% for result in results %}<li>{% if result.href %}
<a href="{{ result.href }}">{{ result.title }}</a> <span class="hint">{{ result.type }}</span>{% else %}
{{ result.title }}:
<code>{{ result.value }}</code>{% endif %}</li>{% endfor %}</ul>{% endif %}
{% for look in quicklooks %}<figure><img class="quicklook" alt="quicklook of {{ look.title }}" src="{{ look.src }}">
<figcaption>{{ look.title }}: {{ look.footprint }}</figcaption></figure>{% endfor %}
{% if log_tail %}<h2>Last log lines</h2><pre id="log-tail">{% for line in log_tail %}{{ line }}
{% endfor %}</pre>{% endif %}<script src="{{ base }}/static/job.js"></script>{% endblock %}""",
    "results": """{% extends "base" %}{% block body %}<h1>Results</h1><table id="outputs">{% for name, value in
doc.items() %}<tr><td>{{ name }}</td><td>{% for one in as_list(value) %}{% if one is mapping and one.href %}
<a href="{{ one.href }}">{{ one.title or one.href }}</a> <span class="hint">{{ one.type }}</span><br>{% else %}
<pre>{{ one | tojson(indent=2) }}</pre>{% endif %}{% endfor %}</td></tr>{% endfor %}</table>{% endblock %}""",
    "logs": """{% extends "base" %}{% block body %}<h1>Logs of {{ doc.jobID }}</h1><pre>{% for line in doc.logs %}
{{ line.time[11:19] }} {{ line.message }}
{% endfor %}</pre>{% endblock %}""",
    "metadata": """{% extends "base" %}{% block body %}<h1>Provenance of {{ doc.jobID }}</h1><table>
{% for key, value in doc.items() %}<tr><td>{{ key }}</td><td><pre>{{ value | tojson(indent=2) }}</pre></td></tr>
{% endfor %}</table>{% endblock %}""",
    "error": """{% extends "base" %}{% block body %}<h1>{{ doc.title }}</h1><p>{{ doc.detail }}</p>
{% if doc.status == 401 %}<p><a href="{{ base }}/login">Sign in</a> with an API token, then come back.</p>{% endif %}
<p class="hint">{{ doc.type }} ({{ doc.status }})</p>{% endblock %}""",
    "login": """{% extends "base" %}{% block body %}<h1>Sign in</h1><form method="post" action="{{ base }}/login">
<label for="token">API token</label><input id="token" name="token" type="password" autocomplete="off" required>
<input type="hidden" name="next" value="{{ next }}">
<p><button>Sign in</button></p></form>{% endblock %}""",
    "signed-in": """{% extends "base" %}{% block head %}{% if next %}
<meta http-equiv="refresh" content="0; url={{ base }}{{ next }}">{% endif %}{% endblock %}{% block body %}
<p>signed in as {{ subject }}: <a href="{{ base }}{{ next or '/processes?f=html' }}">go on</a></p>{% endblock %}""",
    "logout": """{% extends "base" %}{% block body %}<h1>Sign out</h1>{% if who %}<p>Signed in as {{ who.subject }}.</p>
{% endif %}<form method="post" action="{{ base }}/logout"><p><button>Sign out</button></p></form>{% endblock %}""",
    "signed-out": """{% extends "base" %}{% block body %}<p>signed out.
<a href="{{ base }}/login">Sign in</a> again.</p>{% endblock %}""",
}

_environment = Environment(
    loader=DictLoader(PAGES), autoescape=select_autoescape(default=True, default_for_string=True)
)


def _paging(document: dict[str, Any]) -> Markup:
    links = [link for link in document.get("links", []) if link.get("rel") in ("prev", "next")]
    anchors = [
        Markup('<a href="{}">{}</a>').format(_as_html(link["href"]), link["rel"]) for link in links if link.get("href")
    ]
    return Markup(" ").join(anchors)


def _as_html(href: str) -> str:
    """A link to the HTML face of the same document."""
    return href if "f=html" in href else f"{href}{'&' if '?' in href else '?'}f=html"


def _as_list(value: Any) -> list[Any]:
    """An output's parts: several files (OGC's qualified value holding their list), one file, or one value."""
    if isinstance(value, dict) and isinstance(value.get("value"), list) and "href" not in value:
        return list(value["value"])
    return value if isinstance(value, list) else [value]


_environment.globals |= {"paging": _paging, "as_list": _as_list}


def render(page: str, document: Any, request: Request, **extra: Any) -> str:
    """An HTML page for a document."""
    context = request.app.state.context
    if page == "job":
        extra = _job_extras(document, request) | extra
    if page == "process":
        # Read by static/form.js; `<` is escaped so that no text of a schema can end the script element.
        extra["description"] = Markup(json.dumps(document).replace("<", "\\u003c"))
    base = context.base_url(request)
    return _environment.get_template(page).render(
        doc=_attributes(document), base=base, who=context.signed_in(request), **extra
    )


def render_page(page: str, request: Request, who: Any = None, **values: Any) -> str:
    """A page without a document of its own (sign-in, sign-out), shown to `who` (else whoever signed in)."""
    context = request.app.state.context
    if who is None and page != "signed-out":
        who = context.signed_in(request)
    return _environment.get_template(page).render(doc={}, base=context.base_url(request), who=who, **values)


def _job_extras(document: dict[str, Any], request: Request) -> dict[str, Any]:
    """What a job's page shows beside its status: result links, quicklooks and the last log lines."""
    context = request.app.state.context
    extras: dict[str, Any] = {"results": [], "quicklooks": [], "log_tail": []}
    if document.get("status") in ("successful", "failed", "running", "dismissed"):
        extras["log_tail"] = context.log_tail(document["jobID"], 20)
    if document.get("status") != "successful":
        return extras
    from granary_flows.api.execute import Links
    from granary_flows.documents import ExecutionDocument, read_results
    from granary_flows.webhooks import output_link

    try:
        execution = read_results(context.store, document["processID"], document["jobID"])
    except (FileNotFoundError, OSError, ValueError):
        return extras
    if not isinstance(execution, ExecutionDocument):
        return extras
    base = context.base_url(request)
    links = Links(context.store, base, document["processID"], document["jobID"])
    extras["results"] = [
        {"title": asset.title or asset.href.rsplit("/", 1)[-1], "href": links(asset.href), "type": asset.type or ""}
        for asset in execution.results
    ]
    if execution.value is not None:
        extras["results"].append({"title": "value", "value": json.dumps(execution.value)[:2000]})
    own = context.store.execution_uri(document["processID"], document["jobID"])
    from granary_flows.layout import output_path_in

    for look in execution.quicklooks:
        relative = output_path_in(look.href, own) or ""
        src = context.store.presign(look.href, own) or output_link(base, document["jobID"], relative)
        west, south, east, north = look.bbox or (None, None, None, None)
        footprint = (
            f"west {west:.5f}, south {south:.5f}, east {east:.5f}, north {north:.5f} (WGS 84)"
            if west is not None
            else ""
        )
        extras["quicklooks"].append({"title": look.title, "src": src, "footprint": footprint})
    return extras


class _Attributes(dict):  # type: ignore[type-arg]
    """A document whose keys templates may also read as attributes."""

    def __getattr__(self, name: str) -> Any:
        return self.get(name)


def _attributes(value: Any) -> Any:
    if isinstance(value, dict):
        return _Attributes({k: _attributes(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_attributes(v) for v in value]
    return value


def api_page(openapi: dict[str, Any], base: str) -> str:
    """The API's documentation (service-doc): every path and operation of the OpenAPI document, served here."""
    from html import escape

    rows = []
    for path, operations in openapi.get("paths", {}).items():
        for method, operation in operations.items():
            rows.append(
                f"<tr><td>{escape(method.upper())}</td><td>{escape(path)}</td>"
                f"<td>{escape(str(operation.get('summary', '')))}</td></tr>"
            )
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>API of granary-flows</title></head><body>"
        f"<h1>{escape(openapi.get('info', {}).get('title', 'API'))}</h1><p><a href='{escape(base)}/openapi.json'>"
        f"OpenAPI 3.0 document</a></p><table>{''.join(rows)}</table></body></html>"
    )
