"""The Grafana template variables, ``__inputs`` and ``__requires`` of the partsim dashboard
(scripts/gen-dashboard.py), so that it works both provisioned and imported into an existing Grafana.

- ``datasource`` (type datasource, Prometheus): every panel and target reads ``${datasource}``,
  never a fixed uid. ``__inputs`` makes "Import dashboard" ask for a Prometheus (DS_PROMETHEUS); the
  import writes its uid over the ``${DS_PROMETHEUS}`` of the variable's current value. Under file
  provisioning (deploy/grafana, the Kubernetes Grafana sidecar) nothing substitutes DS_PROMETHEUS, no
  option has that value, and Grafana picks the option whose name is the current text, "Prometheus":
  the data source deploy/grafana/provisioning/datasources/prometheus.yml provisions (and
  kube-prometheus-stack's default name), or else the first Prometheus.
- ``job_prefix`` (textbox, default ``partsim-``): selectors read ``job="${job_prefix}gateway"`` and
  ``job=~"${job_prefix}.+"``. Not a query variable over ``label_values(grpc_server_handled_total,
  job)``: one prefix yields both the gateway alone and every partsim service, fits a deployment whose
  jobs are renamed (``staging-partsim-``), and has a default that tests/test_observability.py
  substitutes to run every query against a real Prometheus without asking it first.
- ``namespace`` (query over the ``namespace`` label of the partsim jobs' ``up`` series, multi-value,
  "All" by default = ``.*``): one dashboard for each deployment of partsim in a shared Prometheus
  (Kubernetes namespaces). Where the series have no namespace label (compose, a local Prometheus),
  ``namespace=~".*"`` still matches them. :func:`scoped` puts both selectors into every metric selector
  of every query, so no panel mixes deployments.
"""

from __future__ import annotations

import re

JOB = "${job_prefix}"  # default "partsim-"
NS = 'namespace=~"${namespace}"'
SCOPE = f'job=~"{JOB}.+",{NS}'
# a metric selector of partsim's series: the metric name, then its label matchers if any (which may hold ${var})
_METRIC = re.compile(r"\b(partsim[_:][\w:]+|grpc_server_\w+|process_\w+|up)\b(\{(?:[^{}]|\$\{\w+\})*\})?")


def scoped(expr: str) -> str:
    """``expr`` with the job and namespace variables in every metric selector: both where a selector names no
    job (``partsim_index_tracks`` -> ``partsim_index_tracks{job=~"${job_prefix}.+",namespace=~"${namespace}"}``),
    only the namespace where it names one already (the gateway's panels) and on the recording rules'
    ``partsim:`` series, which keep the namespace label but may aggregate the job away."""

    def add(m: re.Match) -> str:
        name, braces = m.group(1), (m.group(2) or "{}")[1:-1]
        if NS in braces:
            labels = braces
        elif "job=" in braces or name.startswith("partsim:"):
            labels = f"{braces},{NS}" if braces else NS
        else:
            labels = f"{SCOPE},{braces}" if braces else SCOPE
        return f"{name}{{{labels}}}"

    return _METRIC.sub(add, expr)


def variable(name: str, label: str, kind: str, query: str, text: str, value: str, description: str) -> dict:
    return {
        **{"name": name, "label": label, "type": kind, "query": query, "description": description},
        **{"current": {"selected": False, "text": text, "value": value}, "hide": 0, "options": []},
    }


TEMPLATING = [
    variable("datasource", "Data source", "datasource", "prometheus", "Prometheus", "${DS_PROMETHEUS}", "")
    | {"regex": "", "refresh": 1, "includeAll": False, "multi": False},
    variable("job_prefix", "Job prefix", "textbox", "partsim-", "partsim-", "partsim-", "jobs are <prefix><service>"),
    variable(
        "namespace",
        "Namespace",
        "query",
        f'label_values(up{{job=~"{JOB}.+"}}, namespace)',
        "All",
        "$__all",
        "the deployment(s) shown: Kubernetes namespaces; All also matches series without the label",
    )
    | {"datasource": {"type": "prometheus", "uid": "${datasource}"}, "refresh": 2, "sort": 1}
    | {
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "definition": f'label_values(up{{job=~"{JOB}.+"}}, namespace)',
    },
]
INPUTS = [
    {"name": "DS_PROMETHEUS", "label": "Prometheus", "description": "the Prometheus scraping partsim"}
    | {"type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}
]
REQUIRES = [
    {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
    {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
    {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
]
