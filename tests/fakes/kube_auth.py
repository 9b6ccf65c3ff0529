"""The fake Kubernetes API's TokenReview (``authentication.k8s.io/v1``), over real HTTP.

``POST /apis/authentication.k8s.io/v1/tokenreviews`` answers as the API server does for a
webhook token authenticator's question: ``201`` with the review and its ``status``
(``authenticated``, ``user`` with the ServiceAccount's username, uid and groups, ``audiences``),
or ``authenticated: false`` with an ``error`` for a token it did not issue. Tokens are issued
with :meth:`TokenReviews.issue` (as the kubelet gets a projected ServiceAccount token) and
invalidated with :meth:`TokenReviews.invalidate` (as deleting the ServiceAccount does).
"""

from __future__ import annotations

import secrets
import threading
import uuid
from typing import Any

PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
"""Where TokenReviews are created."""


class TokenReviews:
    """The ServiceAccount tokens this fake cluster issued, and their reviews."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, str, str]] = {}  # token → (namespace, name, uid)
        self.reviews: list[str] = []  # the usernames (or "") each review answered
        self._lock = threading.Lock()

    def issue(self, namespace: str, name: str) -> str:
        """A new token of ServiceAccount ``namespace/name`` (a JWT-looking opaque string)."""
        token = "eyJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[token] = (namespace, name, str(uuid.uuid4()))
        return token

    def invalidate(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)

    def handle(self, method: str, body: Any) -> tuple[int, dict[str, Any]]:
        """Answer a request to :data:`PATH` (the caller turns ``ApiError`` into a Status)."""
        from tests.fakes.kube import bad_request, method_not_allowed

        if method != "POST":
            raise method_not_allowed(None, method.lower())
        if not isinstance(body, dict) or body.get("kind") != "TokenReview":
            raise bad_request("the body is not a TokenReview")
        spec = body.get("spec")
        token = spec.get("token") if isinstance(spec, dict) else None
        if not isinstance(token, str) or not token:
            raise bad_request("TokenReview.spec.token: Required value")
        with self._lock:
            found = self._tokens.get(token)
        review: dict[str, Any] = {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
        }
        if found is None:
            review["status"] = {"authenticated": False, "error": "invalid bearer token"}
            self.reviews.append("")
            return 201, review
        namespace, name, uid = found
        username = f"system:serviceaccount:{namespace}:{name}"
        review["status"] = {
            "authenticated": True,
            "user": {
                "username": username,
                "uid": uid,
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{namespace}",
                    "system:authenticated",
                ],
            },
            "audiences": ["https://kubernetes.default.svc"],
        }
        self.reviews.append(username)
        return 201, review
