"""The HTML face of every GET, for a browser (`Accept: text/html` or `f=html`): the same documents as the JSON, made
readable, a run form per process built from its schema, and each job's status, logs, results and quicklooks.
Nothing is fetched from anywhere else: no script, style or font comes from outside this API."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from jinja2 import DictLoader, Environment, select_autoescape

BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{% block title %}granary-flows{% endblock %}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:0;color:#1d2733}header{background:#23395b;color:#fff;padding:.6em 1.2em}
header a{color:#fff;margin-right:1.2em;text-decoration:none}main{padding:1em 1.2em;max-width:70em}
table{border-collapse:collapse}td,th{border-bottom:1px solid #dde;padding:.3em .6em;text-align:left;vertical-align:top}
.status{font-weight:bold}.successful{color:#1a7f37}.failed{color:#b42318}.running,.accepted{color:#9a6700}
.dismissed{color:#57606a}label{display:block;margin-top:.6em;font-weight:600}input,select,textarea{font:inherit;
min-width:24em}pre{background:#f5f7fa;padding:.6em;overflow:auto;max-height:30em}.hint{color:#57606a;font-weight:400}
img.quicklook{width:16em;border:1px solid #ccd;image-rendering:pixelated}
</style></head><body><header><a href="{{ base }}/?f=html">granary-flows</a><a href="{{ base }}/processes?f=html">
processes</a><a href="{{ base }}/jobs?f=html">jobs</a><a href="{{ base }}/api.html">API</a></header><main>
{% block body %}{% endblock %}</main></body></html>"""

PAGES = {
    "base": BASE,
    "landing": """{% extends "base" %}{% block body %}<h1>{{ doc.title }}</h1><p>{{ doc.description }}</p>
{% if doc.authentication %}<p class="failed">Authentication is {{ doc.authentication }}</p>{% endif %}
<ul>{% for link in doc.links %}<li><a href="{{ link.href }}">{{ link.title }}</a> <span class="hint">{{ link.rel }}
</span></li>{% endfor %}</ul>{% endblock %}""",
    "conformance": """{% extends "base" %}{% block body %}<h1>Conformance</h1><ul>{% for c in doc.conformsTo %}
<li>{{ c }}</li>{% endfor %}</ul>{% endblock %}""",
    "processes": """{% extends "base" %}{% block body %}<h1>Processes</h1><table><tr><th>process</th><th>title</th>
<th>version</th></tr>{% for p in doc.processes %}<tr><td><a href="{{ base }}/processes/{{ p.id }}?f=html">{{ p.id }}</a>
</td><td>{{ p.title }}</td><td>{{ p.version }}</td></tr>{% endfor %}</table>{% for link in doc.links %}{% if link.rel in
("next", "prev") %}<a href="{{ link.href }}&f=html">{{ link.rel }}</a> {% endif %}{% endfor %}{% endblock %}""",
    "process": """{% extends "base" %}{% block body %}<h1>{{ doc.title }}</h1><p>{{ doc.description }}</p>
<p class="hint">{{ doc.id }} {{ doc.version }}</p><h2>Run it</h2><form id="run">{% for name, input in doc.inputs.items() %}
<label for="in-{{ name }}">{{ input.title }}{% if input.minOccurs == 0 %} <span class="hint">(optional)</span>{% endif %}
</label>{% if input.description %}<div class="hint">{{ input.description }}</div>{% endif %}
{% set s = input.schema %}{% if s.enum %}<select id="in-{{ name }}" name="{{ name }}" data-kind="string">
{% if input.minOccurs == 0 %}<option value=""></option>{% endif %}{% for option in s.enum %}<option>{{ option }}</option>
{% endfor %}</select>{% elif s.type == "boolean" %}<input type="checkbox" id="in-{{ name }}" name="{{ name }}"
data-kind="boolean">{% elif s.type in ("integer", "number") %}<input type="number" step="any" id="in-{{ name }}"
name="{{ name }}" data-kind="number" value="{{ s.default if s.default is defined else '' }}">{% elif input.maxOccurs != 1
or s.type in ("object", "array") %}<textarea id="in-{{ name }}" name="{{ name }}" data-kind="json" rows="3"
placeholder="JSON"></textarea>{% else %}<input id="in-{{ name }}" name="{{ name }}" data-kind="string"
value="{{ s.default if s.default is defined else '' }}">{% endif %}{% endfor %}<p><button type="submit">Execute</button>
</p><p id="said" class="failed"></p></form><script>
document.getElementById("run").addEventListener("submit", async (event) => {
  event.preventDefault();
  const inputs = {};
  for (const field of event.target.querySelectorAll("[name]")) {
    const kind = field.dataset.kind;
    if (kind === "boolean") { inputs[field.name] = field.checked; continue; }
    if (field.value === "") continue;
    try { inputs[field.name] = kind === "number" ? Number(field.value) : kind === "json" ? JSON.parse(field.value)
      : field.value; } catch (e) { document.getElementById("said").textContent = field.name + ": not JSON"; return; }
  }
  const response = await fetch("{{ base }}/processes/{{ doc.id }}/execution", {method: "POST", credentials:
    "same-origin", headers: {"Content-Type": "application/json", "Prefer": "respond-async"}, body: JSON.stringify({inputs})});
  if (response.status === 201) { window.location = response.headers.get("Location") + "?f=html"; return; }
  const problem = await response.json();
  document.getElementById("said").textContent = (problem.title || "refused") + ": " + (problem.detail || "");
});</script><h2>Outputs</h2><ul>{% for name, output in doc.outputs.items() %}<li>{{ output.title }}
<span class="hint">{{ name }}</span></li>{% endfor %}</ul>{% endblock %}""",
    "jobs": """{% extends "base" %}{% block body %}<h1>Jobs</h1><form method="get"><input type="hidden" name="f"
value="html">process <input name="processID" style="min-width:10em"> status <select name="status" style="min-width:8em">
<option value=""></option>{% for s in ["accepted","running","successful","failed","dismissed"] %}<option>{{ s }}</option>
{% endfor %}</select> <button>filter</button></form><table><tr><th>job</th><th>process</th><th>status</th>
<th>progress</th><th>created</th></tr>{% for job in doc.jobs %}<tr><td><a href="{{ base }}/jobs/{{ job.jobID }}?f=html">
{{ job.jobID }}</a></td><td>{{ job.processID }}</td><td class="status {{ job.status }}">{{ job.status }}</td>
<td>{{ job.progress }}%</td><td>{{ job.created }}</td></tr>{% endfor %}</table>{% for link in doc.links %}{% if link.rel
in ("next", "prev") %}<a href="{{ link.href }}&f=html">{{ link.rel }}</a> {% endif %}{% endfor %}{% endblock %}""",
    "job": """{% extends "base" %}{% block body %}<h1>Job {{ doc.jobID }}</h1><p>{{ doc.processID }}:
<span id="status" class="status {{ doc.status }}">{{ doc.status }}</span> ({{ doc.progress }}%)</p>
<p>{{ doc.message }}</p><table><tr><td>created</td><td>{{ doc.created }}</td></tr><tr><td>started</td>
<td>{{ doc.started }}</td></tr><tr><td>finished</td><td>{{ doc.finished }}</td></tr>{% if doc.submitter %}<tr>
<td>submitted by</td><td>{{ doc.submitter }}</td></tr>{% endif %}</table><p>{% for link in doc.links %}
<a href="{{ link.href }}{{ '&' if '?' in link.href else '?' }}f=html">{{ link.title }}</a> · {% endfor %}
{% if doc.stacItem %}<a href="{{ doc.stacItem }}">STAC Item</a>{% endif %}</p>{% for look in quicklooks %}
<figure><img class="quicklook" alt="quicklook of {{ look.title }}" src="{{ look.src }}"><figcaption>{{ look.title }}:
{{ look.footprint }}</figcaption></figure>{% endfor %}{% if doc.status in ("accepted", "running") %}
<script>setTimeout(() => window.location.reload(), 1500)</script>{% endif %}{% endblock %}""",
    "results": """{% extends "base" %}{% block body %}<h1>Results</h1><table>{% for name, value in doc.items() %}<tr>
<td>{{ name }}</td><td>{% for one in (value if value is sequence and value is not string else [value]) %}
{% if one is mapping and one.href %}<a href="{{ one.href }}">{{ one.title or one.href }}</a><br>{% else %}
<pre>{{ one | tojson(indent=2) }}</pre>{% endif %}{% endfor %}</td></tr>{% endfor %}</table>{% endblock %}""",
    "logs": """{% extends "base" %}{% block body %}<h1>Logs of {{ doc.jobID }}</h1><pre>{% for line in doc.logs %}
{{ line.time[11:19] }} {{ line.message }}
{% endfor %}</pre>{% endblock %}""",
    "metadata": """{% extends "base" %}{% block body %}<h1>Provenance of {{ doc.jobID }}</h1><table>
{% for key, value in doc.items() %}<tr><td>{{ key }}</td><td><pre>{{ value | tojson(indent=2) }}</pre></td></tr>
{% endfor %}</table>{% endblock %}""",
    "error": """{% extends "base" %}{% block body %}<h1>{{ doc.title }}</h1><p>{{ doc.detail }}</p>
<p class="hint">{{ doc.type }} ({{ doc.status }})</p>{% endblock %}""",
}

_environment = Environment(
    loader=DictLoader(PAGES), autoescape=select_autoescape(default=True, default_for_string=True)
)


def render(page: str, document: Any, request: Request, **extra: Any) -> str:
    """An HTML page for a document."""
    context = request.app.state.context
    quicklooks = extra.pop("quicklooks", None)
    if quicklooks is None and page == "job":
        quicklooks = _quicklooks(document, request)
    return _environment.get_template(page).render(
        doc=_attributes(document), base=context.base_url(request), quicklooks=quicklooks or [], **extra
    )


def _quicklooks(document: dict[str, Any], request: Request) -> list[dict[str, Any]]:
    """The pictures of a successful job's raster results, as the runner made them."""
    if document.get("status") != "successful":
        return []
    context = request.app.state.context
    from granary_flows.documents import ExecutionDocument, read_results
    from granary_flows.layout import output_path_in
    from granary_flows.webhooks import output_link

    try:
        execution = read_results(context.store, document["processID"], document["jobID"])
    except (FileNotFoundError, OSError, ValueError):
        return []
    if not isinstance(execution, ExecutionDocument):
        return []
    base = context.base_url(request)
    own = context.store.execution_uri(document["processID"], document["jobID"])
    looks = []
    for look in execution.quicklooks:
        relative = output_path_in(look.href, own) or ""
        src = context.store.presign(look.href, own) or output_link(base, document["jobID"], relative)
        west, south, east, north = look.bbox or (None, None, None, None)
        footprint = (
            f"west {west:.5f}, south {south:.5f}, east {east:.5f}, north {north:.5f} (WGS 84)"
            if west is not None
            else ""
        )
        looks.append({"title": look.title, "src": src, "footprint": footprint})
    return looks


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
    rows = []
    for path, operations in openapi.get("paths", {}).items():
        for method, operation in operations.items():
            rows.append(f"<tr><td>{method.upper()}</td><td>{path}</td><td>{operation.get('summary', '')}</td></tr>")
    from html import escape

    body = "".join(rows)
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>API of granary-flows</title></head><body>"
        f"<h1>{escape(openapi.get('info', {}).get('title', 'API'))}</h1><p><a href='{escape(base)}/openapi.json'>"
        f"OpenAPI 3.0 document</a></p><table>{body}</table></body></html>"
    )
