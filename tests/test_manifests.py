"""The cluster side, checked offline: kustomize builds, Kubernetes and eksctl schemas, IAM least privilege, and
the compiled DAG's GPU scheduling against the node group that must carry it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.package import compile_pipeline

ROOT = Path(__file__).parents[1]
MANIFESTS = ROOT / "manifests"
BIN = Path(sys.executable).parent
TRAINING_TASKS = ("exec-train-cnn", "exec-train-autoencoder", "exec-train-dnn")
PROJECT_ARNS = re.compile(
    r"arn:aws:s3:::(musicrec-data(/amazon-reviews-2018/\*)?|musicrec-artifacts(/pipeline-root/\*)?"
    r"|musicrec-models(/musicrec/\*)?)"
)


def kustomize(directory: Path) -> list[dict]:
    built = subprocess.run([str(BIN / "kubectl"), "kustomize", str(directory)], capture_output=True, text=True,
                           check=True).stdout  # fmt: skip
    return [doc for doc in yaml.safe_load_all(built) if doc]


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((MANIFESTS / "cluster" / "eksctl-cluster.yaml").read_text())


@pytest.fixture(scope="module")
def gpu_group(cluster) -> dict:
    (group,) = [g for g in cluster["managedNodeGroups"] if "taints" in g]
    return group


def test_the_base_builds_and_every_resource_passes_strict_kubernetes_validation(tmp_path):
    resources = kustomize(MANIFESTS / "base")
    assert {(r["kind"], r["metadata"]["name"]) for r in resources} == {
        ("DaemonSet", "nvidia-device-plugin"), ("ConfigMap", "kfp-launcher"),
    }  # fmt: skip
    built = tmp_path / "base.yaml"
    built.write_text(yaml.safe_dump_all(resources))
    result = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "-k", "1.33.0", str(built)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_aws_overlay_pins_kfp_and_its_patch_gives_the_pipeline_runner_the_clusters_role(tmp_path, cluster):
    overlay = yaml.safe_load((MANIFESTS / "overlays" / "aws" / "kustomization.yaml").read_text())
    (remote,) = [r for r in overlay["resources"] if "://" in r]
    assert remote.endswith("manifests/kustomize/env/platform-agnostic?ref=2.17.0")
    # The remote base cannot be fetched offline: apply the overlay's own parts to a stand-in of KFP's account.
    account = {"name": "pipeline-runner", "namespace": "kubeflow"}
    (tmp_path / "kfp.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": account})
    )
    shutil.copy(MANIFESTS / "overlays" / "aws" / overlay["patches"][0]["path"], tmp_path / "patch.yaml")
    shutil.copytree(MANIFESTS / "base", tmp_path / "base")  # kustomize reads nothing above its own root
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(
        {"resources": ["kfp.yaml", "base"], "patches": [{"path": "patch.yaml"}]}
    ))  # fmt: skip
    (account,) = [r for r in kustomize(tmp_path) if r["kind"] == "ServiceAccount"]
    irsa = next(a for a in cluster["iam"]["serviceAccounts"] if a["metadata"]["name"] == "pipeline-runner")
    assert irsa["metadata"]["namespace"] == "kubeflow" and irsa["roleOnly"] is True
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role.endswith(f":role/{irsa['roleName']}")
    assert irsa["attachPolicyARNs"] == [role.replace(f"role/{irsa['roleName']}", "policy/musicrec-pipelines")]


def test_the_cluster_config_passes_eksctls_published_schema():
    schema = MANIFESTS / "schemas" / "eksctl-clusterconfig-v1alpha5.schema.json"
    command = [
        str(BIN / "check-jsonschema"),
        "--schemafile",
        str(schema),
        str(MANIFESTS / "cluster" / "eksctl-cluster.yaml"),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_training_tasks_select_and_tolerate_exactly_the_gpu_node_group(tmp_path, cluster, gpu_group):
    documents = list(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml").read_text()))
    executors = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(TRAINING_TASKS)
    (taint,) = gpu_group["taints"]
    for name in TRAINING_TASKS:
        # EKS labels every node of a managed node group with eks.amazonaws.com/nodegroup: <its name>.
        assert executors[name]["nodeSelector"]["labels"] == {"eks.amazonaws.com/nodegroup": gpu_group["name"]}
        (toleration,) = executors[name]["tolerations"]
        assert (toleration["key"], toleration["effect"], toleration["operator"]) == (
            taint["key"], taint["effect"], "Exists",
        )  # fmt: skip
    assert gpu_group["minSize"] == 0 and gpu_group["instanceType"].startswith(("g5.", "g6."))
    assert cluster["iam"]["withOIDC"] is True
    plugin = next(r for r in kustomize(MANIFESTS / "base") if r["kind"] == "DaemonSet")["spec"]["template"]["spec"]
    assert plugin["nodeSelector"] == {"eks.amazonaws.com/nodegroup": gpu_group["name"]}
    assert {"key": taint["key"], "operator": "Exists", "effect": taint["effect"]} in plugin["tolerations"]
    assert re.fullmatch(r".+:v\d+\.\d+\.\d+", plugin["containers"][0]["image"]), "the device plugin is pinned"


def _granted(policy_file: str) -> tuple[set[str], set[str], dict]:
    policy = json.loads((MANIFESTS / "iam" / policy_file).read_text())
    resources, actions = set(), set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        resources |= set(statement["Resource"])
        actions |= set(statement["Action"])
    assert all(PROJECT_ARNS.fullmatch(arn) for arn in resources), resources
    return resources, actions, policy


def test_iam_grants_only_the_projects_prefixes_and_the_pipeline_root_is_inside_them():
    _, actions, policy = _granted("musicrec-pipelines-policy.json")
    assert actions <= {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"}
    writable = {arn for s in policy["Statement"] if "s3:PutObject" in s["Action"] for arn in s["Resource"]}
    assert not any(arn.startswith("arn:aws:s3:::musicrec-data") for arn in writable), "raw data is read-only"
    launcher = next(r for r in kustomize(MANIFESTS / "base") if r["kind"] == "ConfigMap")["data"]
    root = launcher["defaultPipelineRoot"].removeprefix("s3://")
    assert f"arn:aws:s3:::{root}/*" in writable
    assert yaml.safe_load(launcher["providers"])["s3"]["default"]["credentials"] == {"fromEnv": True}


def test_no_static_credentials_anywhere_in_the_cluster_side():
    texts = [p.read_text() for p in MANIFESTS.rglob("*") if p.is_file() and p.suffix in (".yaml", ".json")]
    texts += [p.read_text() for p in (ROOT / ".github").rglob("*.yaml")]
    for text in texts:
        assert not re.search(r"AKIA[0-9A-Z]{16}|aws_secret_access_key|secretAccessKey|AWS_SECRET_ACCESS_KEY", text)


def test_the_inference_services_validate_and_read_only_the_model_store(cluster, tmp_path):
    resources = kustomize(MANIFESTS / "serving")
    services = [r for r in resources if r["kind"] == "InferenceService"]
    assert {s["metadata"]["name"] for s in services} == {"musicrec-sentiment", "musicrec-recommender"}
    schema = MANIFESTS / "schemas" / "kserve-inferenceservice-v1beta1.schema.json"
    files = [MANIFESTS / "serving" / name for name in ("sentiment.yaml", "recommender.yaml")]
    files.append(MANIFESTS / "serving" / "canary" / "recommender-canary.yaml")
    result = subprocess.run([str(BIN / "check-jsonschema"), "--schemafile", str(schema), *map(str, files)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    canary = yaml.safe_load(files[-1].read_text())["spec"]["predictor"]
    assert 0 < canary["canaryTrafficPercent"] < 100
    # The core kinds beside them pass strict Kubernetes validation.
    core = [r for r in resources if r["kind"] != "InferenceService"]
    assert {r["kind"] for r in core} == {"Namespace", "ServiceAccount"}
    (tmp_path / "core.yaml").write_text(yaml.safe_dump_all(core))
    validated = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "-k", "1.33.0",
                                str(tmp_path / "core.yaml")], capture_output=True, text=True)  # fmt: skip
    assert validated.returncode == 0, validated.stdout + validated.stderr
    readable, actions, _ = _granted("musicrec-serving-policy.json")
    assert actions == {"s3:GetObject", "s3:ListBucket"}, "the servers only read"
    (account,) = [r for r in resources if r["kind"] == "ServiceAccount"]
    role = next(
        a for a in cluster["iam"]["serviceAccounts"] if a["metadata"]["name"] == account["metadata"]["name"]
    )
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(f":role/{role['roleName']}")
    for service in services:
        predictor = service["spec"]["predictor"]
        assert predictor["serviceAccountName"] == account["metadata"]["name"]
        assert predictor["model"]["modelFormat"]["name"] == "tensorflow" and predictor["model"]["resources"]
        bucket, _, prefix = predictor["model"]["storageUri"].removeprefix("s3://").partition("/")
        assert f"arn:aws:s3:::{bucket}/{prefix.split('/')[0]}/*" in readable


def test_the_tfjob_validates_runs_train_cnn_on_the_gpu_group_and_its_pod_is_strictly_valid(tmp_path, gpu_group):
    from pipelines.cli import build_parser

    manifest = MANIFESTS / "training" / "sentiment-tfjob.yaml"
    schema = MANIFESTS / "schemas" / "kubeflow-tfjob-v1.schema.json"
    result = subprocess.run([str(BIN / "check-jsonschema"), "--schemafile", str(schema), str(manifest)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (worker,) = yaml.safe_load(manifest.read_text())["spec"]["tfReplicaSpecs"].values()
    assert worker["replicas"] > 1
    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "tensorflow"  # where the operator sets TF_CONFIG
    args = build_parser().parse_args(container["command"][1:])
    assert (container["command"][0], args.command, args.workers) == ("musicrec", "train-cnn", 1)
    assert pod["nodeSelector"] == {"eks.amazonaws.com/nodegroup": gpu_group["name"]}
    (taint,) = gpu_group["taints"]
    assert {"key": taint["key"], "operator": "Exists", "effect": taint["effect"]} in pod["tolerations"]
    # The CRD's schema does not reject unknown fields; Kubernetes' own, on the pod, does.
    as_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "worker"}, "spec": pod}
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(as_pod))
    validated = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "-k", "1.33.0",
                                str(tmp_path / "pod.yaml")], capture_output=True, text=True)  # fmt: skip
    assert validated.returncode == 0, validated.stdout + validated.stderr
