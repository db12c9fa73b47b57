"""deploy/kubernetes/ agrees with the server: its flags, ports, secrets, drain time and health while draining.

The container's command line is parsed by the real CLI parser and turned into a ServerConfig that must pass the
server's own validation (so the non-loopback address really has TLS and a token), with the Secret mounts laid out
under a temporary folder the way the kubelet would lay them out in the pod.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    docs = [d for f in sorted(DEPLOY.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    kinds = [d["kind"] for d in docs]
    assert sorted(kinds) == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    return {d["kind"]: d for d in docs}


@pytest.fixture(scope="module")
def pod(manifests) -> dict:
    return manifests["Deployment"]["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    (c,) = pod["containers"]
    return c


def _argv(container: dict) -> list[str]:
    assert container["command"] == ["deepguard"]
    return list(container["args"])


@pytest.fixture(scope="module")
def args(container):
    from deepguard.cli import build_parser

    parser = build_parser()
    ns = parser.parse_args(_argv(container))  # an unknown or misspelt flag exits here
    assert ns.command == "serve"
    # ... and an abbreviation (argparse takes --token for --token-file) must not pass either
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    known = {o for a in sub.choices["serve"]._actions for o in a.option_strings}
    flags = [a.partition("=")[0] for a in _argv(container) if a.startswith("-")]
    assert set(flags) <= known, set(flags) - known
    return ns


def _ports(container: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def _cpu(value: str | int) -> float:
    s = str(value)
    return int(s[:-1]) / 1000 if s.endswith("m") else float(s)


def test_config_passes_the_servers_validation(tmp_path: Path, pod, container) -> None:
    """Mount paths -> tmp folders with the Secret items as files; then the server's own checks must pass."""
    from deepguard.cli import build_parser
    from deepguard.server import config_from_args

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    for path, vol in mounts.items():
        folder = tmp_path / path.lstrip("/")
        folder.mkdir(parents=True)
        for item in vol.get("secret", {}).get("items", []):
            (folder / item["path"]).write_text(f"{item['key']} from {vol['secret']['secretName']}\n")

    def local(arg: str) -> str:
        flag, eq, value = arg.partition("=")
        if eq and any(value.startswith(f"{path}/") for path in mounts):
            return f"{flag}={tmp_path}{value}"
        return arg

    cfg = config_from_args(build_parser().parse_args([local(a) for a in _argv(container)]))
    cfg.validate()
    assert cfg.host == "0.0.0.0" and not cfg.allow_insecure
    assert cfg.tls and cfg.token == "token from deepguard-token"
    assert cfg.metrics_port is None  # it would bind loopback only (a token is set): no port to expose


def test_probes_and_ports_match_the_flags(args, container) -> None:
    ports = _ports(container)
    assert ports == {"grpc": args.port, "rest": args.rest_port, "health": args.health_port}
    for name in PROBES:
        probe = container[name]
        if "grpc" in probe:
            # the kubelet's gRPC probe speaks no TLS: it can only probe a plain-text port, which with TLS on is
            # the --health-port (grpc.health.v1 alone)
            port = probe["grpc"]["port"]
            assert port == ports["health"] == args.health_port or (port == args.port and not args.tls_cert), (
                name
            )
            assert probe["grpc"].get("service", "") in ("", "deepguard.v1.DeepGuard"), name
        else:
            http = probe["httpGet"]
            port = ports[http["port"]] if isinstance(http["port"], str) else http["port"]
            assert port == ports["rest"] == args.rest_port and not args.no_rest, name
            assert http["path"] == "/healthz" and http["scheme"] == ("HTTPS" if args.tls_cert else "HTTP"), (
                name
            )
    assert '@v1.get("/healthz")' in (ROOT / "deepguard" / "rest.py").read_text()


def test_health_port_stays_out_of_the_service(manifests, args) -> None:
    ports = [p["port"] for p in manifests["Service"]["spec"]["ports"]]
    assert args.health_port not in ports and args.port in ports


def test_plain_health_port_beside_tls_is_what_the_kubelet_probes(tmp_path: Path) -> None:
    """With TLS and a token on the main port, --health-port answers grpc.health.v1 in plain text (SERVING, then
    NOT_SERVING as soon as a drain starts) and nothing else; the main port still refuses plain text."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from deepguard.proto import deepguard_pb2 as pb
    from deepguard.proto import deepguard_pb2_grpc as pb_grpc
    from tests.server_support import running_server, self_signed_cert

    cert, key = self_signed_cert(tmp_path)
    status = health_pb2.HealthCheckResponse
    tls = dict(tls_cert=str(cert), tls_key=str(key), token="t0ken")
    with running_server(grace_s=2.0, rest_port=None, metrics_port=None, health_port=0, **tls) as srv:
        assert srv.health_port and srv.health_port != srv.port
        plain = grpc.insecure_channel(f"127.0.0.1:{srv.health_port}")
        probe = health_pb2_grpc.HealthStub(plain)
        assert probe.Check(health_pb2.HealthCheckRequest(), timeout=10).status == status.SERVING
        with pytest.raises(grpc.RpcError) as info:  # the models are not reachable through it
            pb_grpc.DeepGuardStub(plain).GetModelInfo(pb.ModelInfoRequest(), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        main = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
        with pytest.raises(grpc.RpcError) as info:  # TLS only on the main port
            health_pb2_grpc.HealthStub(main).Check(health_pb2.HealthCheckRequest(), timeout=3)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        stopper = threading.Thread(target=srv.stop, args=(2.0,))
        stopper.start()
        deadline = time.monotonic() + 10
        seen = status.SERVING
        while seen == status.SERVING and time.monotonic() < deadline:
            seen = probe.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            time.sleep(0.02)
        assert seen == status.NOT_SERVING
        stopper.join(15)
        plain.close()
        main.close()


def test_headless_service_selects_the_pods(manifests, container) -> None:
    dep, svc, pdb = manifests["Deployment"], manifests["Service"], manifests["PodDisruptionBudget"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] and svc["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    ports = _ports(container)
    for p in svc["spec"]["ports"]:
        target = ports[p["targetPort"]] if isinstance(p["targetPort"], str) else p["targetPort"]
        # headless: clients get pod IPs and dial the Service port itself, so it must be the container's
        assert target == p["port"] == ports[p["name"]]
    assert "grpc" in {p["name"] for p in svc["spec"]["ports"]}


def test_hpa_scales_the_deployment_on_cpu(manifests, container, args) -> None:
    dep, hpa = manifests["Deployment"], manifests["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", dep["metadata"]["name"])
    assert "replicas" not in dep["spec"]  # re-applying the Deployment must not reset the HPA's count
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    res = container["resources"]
    assert (
        _cpu(res["requests"]["cpu"]) > 0 and res["requests"]["memory"]
    )  # utilisation is relative to requests
    assert args.threads == _cpu(res["limits"]["cpu"])  # onnxruntime would size its pool by the node's cores


def test_secrets_back_the_flags_and_the_readme(args, pod, container) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    files = {}  # path in the pod -> (secret, key)
    for m in container["volumeMounts"]:
        secret = volumes[m["name"]].get("secret")
        if secret:
            assert m.get("readOnly") is True
            for item in secret["items"]:
                files[f"{m['mountPath']}/{item['path']}"] = (secret["secretName"], item["key"])
    used = {args.tls_cert: "tls.crt", args.tls_key: "tls.key", args.token_file: "token"}
    assert set(files) == set(used)  # every flag reads a Secret item, and every item is read
    assert {p: key for p, (_, key) in files.items()} == used
    readme = (DEPLOY / "README.md").read_text()
    tls_secret = files[args.tls_cert][0]
    assert files[args.tls_key][0] == tls_secret
    assert (
        f"create secret tls {tls_secret} " in readme
    )  # `kubectl create secret tls` names the keys tls.crt/key
    assert f"create secret generic {files[args.token_file][0]} --from-file=token=" in readme
    assert "kubectl -n deepguard apply -f deploy/kubernetes/" in readme
    # what the server writes lives on writable volumes: the root file system is read-only
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    writable = [m["mountPath"] for m in container["volumeMounts"] if "emptyDir" in volumes[m["name"]]]
    assert any(args.history_db.startswith(f"{w}/") for w in writable) and "/tmp" in writable


def test_termination_grace_covers_the_drain(pod, args) -> None:
    # SIGTERM is noticed within 1 s (server.run polls), then stop(): --grace-s of draining, up to 5 s joining the
    # REST thread, closing the models. The kubelet's SIGKILL must come after all of it, but not minutes later.
    tgps = pod["terminationGracePeriodSeconds"]
    assert args.grace_s + 1 + 5 < tgps <= args.grace_s + 30


def test_health_watch_reports_not_serving_while_draining() -> None:
    """What balancers see on SIGTERM: an open health Watch gets NOT_SERVING at once, while a stream drains."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from deepguard.client import Client
    from tests.server_support import running_server, sample_frames

    release = threading.Event()

    def two_then_idle():
        yield from sample_frames(200)[1:3]
        release.wait(10)

    with running_server(grace_s=3.0, rest_port=None, metrics_port=None) as srv:
        channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=20
        )
        status = health_pb2.HealthCheckResponse
        assert next(watch).status == status.SERVING
        got, errors = [], []
        with Client(f"127.0.0.1:{srv.port}") as c:
            stream = c.stream_frames(two_then_idle())

            def consume() -> None:
                try:
                    got.extend(stream)
                except Exception as e:  # noqa: BLE001 - the drain ends the idle stream with UNAVAILABLE
                    errors.append(e)

            reader = threading.Thread(target=consume)
            reader.start()
            deadline = time.monotonic() + 30
            while len(got) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(got) == 2
            stopper = threading.Thread(target=srv.stop, args=(3.0,))
            stopper.start()
            try:
                assert next(watch).status == status.NOT_SERVING
                assert stopper.is_alive()  # still draining the open stream
            finally:
                release.set()
                reader.join(10)
                stopper.join(10)
        channel.close()
    assert [r.frame.index for r in got] == [0, 1] and stream.summary is not None
