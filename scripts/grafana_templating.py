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
"""

from __future__ import annotations


def variable(name: str, label: str, kind: str, query: str, text: str, value: str, description: str) -> dict:
    return {
        **{"name": name, "label": label, "type": kind, "query": query, "description": description},
        **{"current": {"selected": False, "text": text, "value": value}, "hide": 0, "options": []},
    }


TEMPLATING = [
    variable("datasource", "Data source", "datasource", "prometheus", "Prometheus", "${DS_PROMETHEUS}", "")
    | {"regex": "", "refresh": 1, "includeAll": False, "multi": False},
    variable("job_prefix", "Job prefix", "textbox", "partsim-", "partsim-", "partsim-", "jobs are <prefix><service>"),
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
