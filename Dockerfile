# syntax=docker/dockerfile:1
# opsgate's image: docs/deploy.md builds and pushes it. Two stages: the first installs opsgate
# and its dependencies (wheels only: no compiler is needed, none is shipped) into a virtualenv,
# the second copies that virtualenv onto a clean slim Python and runs as a non-root user.
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz (deploy/kubernetes/deployment.yaml).
# checkov:skip=CKV_DOCKER_2: health is checked by the Kubernetes liveness and readiness probes
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ONLY_BINARY=:all:
WORKDIR /src
COPY pyproject.toml README.md ./
COPY actions ./actions
COPY approvals ./approvals
COPY bot ./bot
COPY migrations ./migrations
RUN python -m venv /opt/opsgate \
    && /opt/opsgate/bin/pip install --no-cache-dir --no-binary=opsgate . \
    && find /opt/opsgate -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.11-slim-bookworm
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="opsgate" \
      org.opencontainers.image.description="A Slack bot for Day 2 operations: requests in Slack, policy in git, execution through Kubernetes and Vault, with an audit trail." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/opsgate/opsgate" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"
RUN groupadd --system --gid 10001 opsgate \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin opsgate
COPY --from=build /opt/opsgate /opt/opsgate
COPY policy.yml /etc/opsgate/policy.yml
ENV PATH=/opt/opsgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OPSGATE_POLICY=/etc/opsgate/policy.yml \
    OPSGATE_LOG_FORMAT=json
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["opsgate", "serve"]
CMD ["--host", "0.0.0.0", "--port", "8080"]
