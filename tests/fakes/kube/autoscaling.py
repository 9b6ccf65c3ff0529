"""The autoscaling group (``autoscaling/v2``): HorizontalPodAutoscalers (stored only: nothing
scales on their account)."""

from __future__ import annotations

from .registry import Obj, ResourceType, register


def horizontal_pod_autoscaler(
    name: str,
    namespace: str,
    *,
    target_kind: str = "Deployment",
    target_name: str | None = None,
    min_replicas: int = 1,
    max_replicas: int = 10,
    cpu_utilization: int = 80,
) -> Obj:
    """An autoscaling/v2 HorizontalPodAutoscaler on CPU utilization of ``target_name``."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": target_kind,
                "name": target_name or name,
            },
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": cpu_utilization},
                    },
                }
            ],
        },
        "status": {"currentReplicas": min_replicas, "desiredReplicas": min_replicas},
    }


HORIZONTALPODAUTOSCALERS = register(
    ResourceType(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        True,
        ("hpa",),
        ("status",),
    )
)
