"""The dashboards and alerts, proven against a real Prometheus scraping a real cluster.

``partsim up``'s launcher starts the four services; Debian's ``prometheus`` (2.42) scrapes them
with the job names of deploy/prometheus/prometheus.yml and loads deploy/prometheus/alerts.yml;
traffic (indexing, an ingest job with a failing item, EmbedParts, searches in both modes, GetStems,
bad requests) runs through the gateway. Then every dashboard panel query and the signal side of
every alert is evaluated through Prometheus's HTTP API and must return data: no panel or rule may
name a metric the services do not export.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml

from partsim.client import PartsimClient, Stem
from partsim.cluster import Cluster
from partsim.corpus.make import CorpusConfig, make_corpus
from partsim.corpus.soundfonts import check_soundfonts
from partsim.errors import InvalidArgument, NotFound
from partsim.v1 import gateway_pb2, gateway_pb2_grpc

from .util import FAST_SOUNDFONTS, ROOT, run_script, service_configs

pytestmark = pytest.mark.timeout(600)

PROM_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "partsim.json"
RATE_INTERVAL = "5m"  # what Grafana's $__rate_interval stands for here
DEFAULT_PORTS = {"partsim-gateway": 9091, "partsim-embedder": 9092, "partsim-searcher": 9093, "partsim-separator": 9094}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package 'prometheus'; scripts/bootstrap.sh installs it)")
    return path


GRAFANA_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")  # ${name} or $name


def dashboard_defaults(dash: dict) -> dict[str, str]:
    """What each variable a query may use stands for: its default, and $__rate_interval."""
    values = {
        v["name"]: v["allValue"] if v["current"]["value"] == "$__all" else v["current"]["value"]  # "All": its regex
        for v in dash["templating"]["list"]
        if v["type"] != "datasource"
    }
    return values | {"__rate_interval": RATE_INTERVAL}


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with the variables' defaults) for every target of every panel."""
    dash = json.loads(DASHBOARD.read_text())
    values = dashboard_defaults(dash)
    out = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            expr = GRAFANA_VAR.sub(lambda m: values[m.group(1) or m.group(2)], t["expr"])
            out.append((panel["title"], expr))
    return out


def rules() -> list[dict]:
    return [r for g in yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"] for r in g["rules"]]


def split_top(expr: str, words=("and", "or", "unless")) -> list[str]:
    """Split ``expr`` at set operators outside parentheses."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(expr):
        c = expr[i]
        depth += c in "([{"
        depth -= c in ")]}"
        if depth == 0:
            m = re.match(r"\s+({})\s+".format("|".join(words)), expr[i:])
            if m:
                parts.append(expr[start:i])
                i += m.end()
                start = i
                continue
        i += 1
    parts.append(expr[start:])
    return [p.strip() for p in parts]


THRESHOLD = re.compile(r"^(?P<signal>.+?)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<limit>[-0-9.e*()\s]+)$", re.S)


def alert_signals(expr: str) -> list[str]:
    """The signal side of ``signal OP threshold`` (each side of an ``and``)."""
    out = []
    for part in split_top(expr):
        m = THRESHOLD.match(part)
        assert m, f"alert expression {part!r} is not 'signal OP threshold'"
        out.append(m.group("signal"))
    return out


def test_the_rule_and_config_files_pass_promtool():
    promtool = tool("promtool")
    for args in (
        ["check", "rules", str(PROM_DIR / "alerts.yml")],
        ["check", "config", str(PROM_DIR / "prometheus.yml")],
    ):
        r = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


def test_the_dashboard_is_generated_from_its_source():
    r = run_script("gen-dashboard.py", "--check")
    assert r.returncode == 0, r.stderr


def test_the_dashboard_imports_into_an_existing_grafana():
    """No fixed data source uid or job name; "Import dashboard" asks for a Prometheus."""
    text = DASHBOARD.read_text()
    dash = json.loads(text)
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    targets = [t for p in panels for t in p["targets"]]
    variable = {"type": "prometheus", "uid": "${datasource}"}
    assert all(p["datasource"] == variable for p in panels)
    assert all(t["datasource"] == variable for t in targets)
    assert '"uid": "prometheus"' not in text
    assert not [t["expr"] for t in targets if re.search(r'job=~?"partsim-', t["expr"])]
    defined = {v["name"]: v for v in dash["templating"]["list"]}
    used = {m.group(1) or m.group(2) for t in targets for m in GRAFANA_VAR.finditer(t["expr"] + t["datasource"]["uid"])}
    assert used - {"__rate_interval"} <= set(defined), used - set(defined)
    assert {"job_prefix", "namespace"} <= used
    # every metric selector of every query is scoped to the chosen deployment(s)
    selector = re.compile(r"\b(?:partsim[_:][\w:]+|grpc_server_\w+|process_\w+|up)\b(\{(?:[^{}]|\$\{\w+\})*\})?")
    selectors = [m.group(1) or "" for t in targets for m in selector.finditer(t["expr"])]
    assert selectors and all('namespace=~"${namespace}"' in sel for sel in selectors), selectors
    assert defined["namespace"]["includeAll"] and defined["namespace"]["allValue"] == ".*"
    assert defined["datasource"]["type"] == "datasource" and defined["datasource"]["query"] == "prometheus"
    inputs = {i["name"]: i for i in dash["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource" and inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    assert defined["datasource"]["current"]["value"] == "${DS_PROMETHEUS}"  # the import's answer is used
    assert {"grafana", "prometheus", "timeseries"} <= {r["id"] for r in dash["__requires"]}


def test_the_provisioned_grafana_picks_its_data_source_and_the_default_jobs():
    dash = json.loads(DASHBOARD.read_text())
    provisioned = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    ds = next(v for v in dash["templating"]["list"] if v["name"] == "datasource")
    assert [d["name"] for d in provisioned if d["type"] == "prometheus"] == [ds["current"]["text"]]
    jobs = {j for _, expr in dashboard_queries() for j in re.findall(r'job="([^"]+)"', expr)}
    assert jobs and jobs <= set(DEFAULT_PORTS), jobs
    assert all(
        re.fullmatch(r, j)
        for _, e in dashboard_queries()
        for r in re.findall(r'job=~"([^"]+)"', e)
        for j in DEFAULT_PORTS
    )


def test_every_alert_has_a_signal_and_a_threshold():
    alerts = [r for r in rules() if "alert" in r]
    assert {a["alert"] for a in alerts} >= {
        "PartsimHighErrorRatio",
        "PartsimSearchLatencySLOBurn",
        "PartsimIngestLagHigh",
        "PartsimServiceNotServing",
    }
    for a in alerts:
        assert alert_signals(a["expr"]), a["alert"]
        assert a["labels"]["severity"] in ("page", "ticket"), a["alert"]
        assert a["annotations"]["summary"] and a["annotations"]["description"], a["alert"]
    with pytest.raises(AssertionError):
        alert_signals("rate(x[5m])")  # a bare signal with no threshold is refused


def test_the_compose_scrape_config_names_every_service_and_its_metrics_port():
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in cfg["scrape_configs"]}
    for job, port in DEFAULT_PORTS.items():
        host = job.removeprefix("partsim-")
        assert jobs[job] == [f"{host}:{port}"], (job, jobs.get(job))
    configs = service_configs()
    assert {f"partsim-{name}" for name in configs} == set(DEFAULT_PORTS)
    for name, cls in configs.items():
        assert cls.__dataclass_fields__["metrics_port"].default == DEFAULT_PORTS[f"partsim-{name}"]


# ---------------------------------------------------------------------------------------------
# the live proof


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """A real prometheus process on loopback (stopped by its pid)."""

    def __init__(self, binary: str, config: Path, data: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(data.parent / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus did not start: {(data.parent / 'prometheus.log').read_text()}")
            time.sleep(0.3)

    def api(self, path: str, **params) -> dict:
        url = self.url + "/api/v1/" + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=30) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """Cluster + Prometheus + traffic; yields the Prometheus."""
    binary = tool("prometheus")
    from .tiny_separator import make_tiny_repo

    tmp = tmp_path_factory.mktemp("observability")
    catalog = tmp / "catalog"
    make_corpus(
        CorpusConfig(out=catalog, songs=3, seconds=22.0, seed=5, soundfonts=check_soundfonts(FAST_SOUNDFONTS[:1])),
        progress=False,
    )
    repo = tmp / "seprepo"
    make_tiny_repo(repo, name="tiny-sep")
    env = {"PARTSIM_SEPARATOR_REPO": str(repo), "PARTSIM_SEPARATOR_MODEL": "tiny-sep"}
    with Cluster(tmp / "cluster", gateway="127.0.0.1:0", allowed_roots=[catalog], quiet=True, extra_env=env) as c:
        # the scrape config of deploy/prometheus/prometheus.yml with the local metrics addresses
        cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
        where = {f"partsim-{s.name}": s.metrics for s in c.services}
        cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        cfg["rule_files"] = [str(PROM_DIR / "alerts.yml")]
        cfg["scrape_configs"] = [
            {**j, "static_configs": [{"targets": [where[j["job_name"]]]}]}
            for j in cfg["scrape_configs"]
            if j["job_name"] in where
        ]
        assert {j["job_name"] for j in cfg["scrape_configs"]} == set(DEFAULT_PORTS)
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        prom = Prometheus(binary, tmp / "prometheus.yml", tmp / "tsdb")
        try:
            deadline = time.monotonic() + 60  # a first scrape of every service before the traffic
            while len([r for r in prom.query('up{job=~"partsim-.+"} == 1')]) < len(DEFAULT_PORTS):
                assert time.monotonic() < deadline, prom.api("targets")
                time.sleep(0.5)
            traffic(c.gateway, catalog)
            time.sleep(4)  # a few more scrapes and rule evaluations after the last request
            yield prom
        finally:
            prom.stop()


def traffic(gateway: str, catalog: Path) -> None:
    songs = sorted(p for p in catalog.iterdir() if p.is_dir())
    with PartsimClient(gateway, timeout=300) as client:
        client.wait_ready(300)
        client.wait_ready(300, backend="separator")  # GetStems below; the gateway serves before it
        for song in songs[:2]:
            client.index_bytes((song / "mix.flac").read_bytes(), song.name, title=song.name)
        # an ingest job: one good file, one that is not audio (a failed item)
        (catalog / "broken.flac").write_bytes(b"this is not a FLAC file" * 100)
        job = client.submit_job(
            [
                {"track_id": songs[2].name, "uri": songs[2] / "mix.flac"},
                {"track_id": "broken", "uri": catalog / "broken.flac"},
            ]
        )
        deadline = time.monotonic() + 240
        while client.get_job(job).state != gateway_pb2.JOB_STATE_DONE:
            assert time.monotonic() < deadline, "ingest job did not finish"
            time.sleep(0.5)
        st = client.get_job(job)
        assert (st.succeeded, st.failed) == (1, 1)
        data = (songs[0] / "mix.flac").read_bytes()
        client.embed_parts(data, 10.0, 10.0)
        query = [Stem("drums", track_id=songs[0].name, seconds=3.0), Stem("bass", track_id=songs[1].name, seconds=12.0)]
        for mode in ("exact", "approximate", "exact"):  # the repeat is answered from the embedding cache
            assert client.search_mix(query, top_k=3, mode=mode)
        assert client.search_stems(Stem("piano", track_id=songs[1].name, segment_index=0), top_k=3)
        stub = gateway_pb2_grpc.PartsimServiceStub(grpc.insecure_channel(gateway))
        msgs = list(
            stub.GetStems(
                gateway_pb2.GetStemsRequest(
                    segment=gateway_pb2.IndexedSegment(track_id=songs[0].name, segment_index=0)
                ),
                timeout=300,
            )
        )
        assert msgs[0].header.track_id == songs[0].name
        for bad, err in (
            (lambda: client.search_mix([]), InvalidArgument),
            (lambda: client.get_track("never-indexed"), NotFound),
            (lambda: client.embed_parts(b"not audio"), InvalidArgument),
        ):
            with pytest.raises(err):
                bad()


def has_data(result: list[dict]) -> bool:
    return any(not math.isnan(float(r["value"][1])) for r in result)


@pytest.mark.slow  # a whole cluster under traffic, scraped by a real Prometheus
def test_every_target_is_scraped(live):
    targets = live.api("targets")["activeTargets"]
    assert sorted(t["labels"]["job"] for t in targets) == sorted(DEFAULT_PORTS)
    assert all(t["health"] == "up" for t in targets), [(t["labels"]["job"], t["lastError"]) for t in targets]


@pytest.mark.slow  # a whole cluster under traffic, scraped by a real Prometheus
def test_every_dashboard_query_returns_data(live):
    exported = set(live.api("label/__name__/values"))
    labels = set(live.api("labels"))
    empty = []
    for title, expr in dashboard_queries():
        bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # no string literals (label values)
        names = set(re.findall(r"(?<![\w:])((?:partsim|grpc|process)[\w:]*)", bare)) - labels
        missing = names - exported
        assert not missing, f"panel {title!r} names metrics no service exports: {missing}"
        if not has_data(live.query(expr)):
            empty.append((title, expr))
    assert not empty, "panels without data:\n" + "\n".join(f"  {t}: {e}" for t, e in empty)


@pytest.mark.slow  # a whole cluster under traffic, scraped by a real Prometheus
def test_every_rule_evaluates_and_every_alert_signal_returns_data(live):
    groups = live.api("rules")["groups"]
    loaded = [r for g in groups for r in g["rules"]]
    assert len(loaded) == len(rules())
    bad = [(r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
    assert not bad, bad
    empty = []
    for r in rules():
        if "alert" not in r:
            continue
        for signal in alert_signals(r["expr"]):
            if not has_data(live.query(signal)):
                empty.append((r["alert"], signal))
        live.query(r["expr"])  # the full expression is valid PromQL too (it may well be empty)
    assert not empty, "alert signals without data:\n" + "\n".join(f"  {a}: {s}" for a, s in empty)


@pytest.mark.slow  # a whole cluster under traffic, scraped by a real Prometheus
def test_the_alert_signals_read_the_traffic_right(live):
    """Every service serves, no server errors (only the caller's), one of two ingest items failed."""
    res = live.query('min by (job) (partsim_health_serving{job=~"partsim-.+"})')
    assert {r["metric"]["job"]: float(r["value"][1]) for r in res} == {j: 1.0 for j in DEFAULT_PORTS}
    err = live.query("partsim:grpc_server_error_ratio:rate5m")
    assert {r["metric"]["job"] for r in err} >= {"partsim-gateway", "partsim-embedder", "partsim-searcher"}
    assert all(float(r["value"][1]) < 0.05 for r in err), err
    failed = live.query("partsim:ingest_failure_ratio:rate15m")
    assert failed and 0.4 < float(failed[0]["value"][1]) < 0.6  # one of two items failed
