"""The one base policy of the tests, and how a test extends it."""

from __future__ import annotations

POLICY = """\
version: 1
approval_channel: C0APPROVALS
audit_channel: C0AUDIT
incident_channels: ["inc-*"]

groups:
  sre: {users: [U0SRE1, U0SRE2]}
  security: {users: [U0SEC1]}

environments:
  prod:    {kube_context: prod, namespaces: [payments, checkout]}
  staging: {kube_context: staging, namespaces: ["staging-*"]}
  sandbox: {kube_context: staging, namespaces: [sandbox]}

rules:
  - match: {action: restart, environment: staging}
    approval: auto
  - name: checkout needs two
    match: {action: restart, environment: prod, namespace: checkout}
    approvers: [sre]
    min_approvals: 2
  - match: {action: restart, environment: prod}
    approvers: [sre]
"""
