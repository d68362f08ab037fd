"""Kubernetes fixtures: a namespace of this session's own on the real cluster named by ``KUBECONFIG``.

The tests that use them are marked ``k8s`` and skip without ``KUBECONFIG`` (conftest). Job pods use
``local/busybox:test``, which ``tools/k8s_up.sh`` (and ../shared/k8s-local) put into the node's containerd: no
registry is reachable, so an image that is not on the node cannot be pulled.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

K8S_IMAGE = "local/busybox:test"


@pytest.fixture(scope="session")
def k8s_client() -> Iterator[Any]:
    import kubernetes

    if not os.environ.get("KUBECONFIG"):
        pytest.skip("needs a real Kubernetes cluster: set KUBECONFIG")
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(client_configuration=configuration)
    client = kubernetes.client.ApiClient(configuration)
    yield client
    client.close()


@pytest.fixture(scope="session")
def k8s_namespace(k8s_client: Any) -> Iterator[str]:
    """A fresh namespace for this session's Jobs, deleted (with whatever is left in it) at the end."""
    import kubernetes

    core = kubernetes.client.CoreV1Api(k8s_client)
    name = f"hades-test-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background", _request_timeout=30)


def k8s_leftovers(client: Any, namespace: str, job_id: str) -> list[str]:
    """Jobs and pods of one Hades job still in the namespace."""
    import kubernetes

    selector = f"hades.io/job-id={job_id}"
    batch, core = kubernetes.client.BatchV1Api(client), kubernetes.client.CoreV1Api(client)
    jobs = batch.list_namespaced_job(namespace, label_selector=selector, _request_timeout=30).items
    pods = core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=30).items
    return [f"job/{j.metadata.name}" for j in jobs] + [f"pod/{p.metadata.name}" for p in pods]
