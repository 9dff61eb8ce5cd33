# syntax=docker/dockerfile:1
#
# tollway, the AgentOps gateway, as a container image.
#
#   docker build -t tollway .
#   docker run --rm -p 4100:4100 tollway          # the repo's gateway.yaml: demo provider
#   docker run --rm -p 4100:4100 -e OPENAI_API_KEY \
#     -v "$PWD/my-config:/etc/tollway:ro" tollway   # your own gateway.yaml
#
# The config is read from /etc/tollway/gateway.yaml (also TOLLWAY_CONFIG). Mount a directory
# over /etc/tollway rather than the single file, so that edits reach the container and hot
# reload sees them; policy files named relative to the config belong in that directory too.
# Secrets (provider keys, admin key, Redis URL) come from the environment via ${VAR} in the
# config. The gateway listens on 4100 as the unprivileged user tollway (uid 10001); its
# working directory /var/lib/tollway is the place for relative paths such as audit files.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the package and its runtime dependencies (all wheels) into a virtualenv --------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# Not editable and without the [test] extra: only what the gateway needs at run time.
# --build-arg EXTRAS=guardrails adds the guardrails' detectors (Presidio, detect-secrets).
ARG EXTRAS=""
RUN pip install --no-cache-dir "/src${EXTRAS:+[$EXTRAS]}"

# --- runtime: slim Python, the virtualenv, a default config, an unprivileged user ----------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="tollway" \
      org.opencontainers.image.description="AgentOps gateway: meter, attribute, route, cache and guard every LLM and tool call your agents make" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 tollway \
    && useradd --system --no-log-init --uid 10001 --gid tollway \
       --home-dir /var/lib/tollway --create-home --shell /usr/sbin/nologin tollway

COPY --from=build /opt/venv /opt/venv
# The default config: the repo's gateway.yaml, which runs as it is (the demo provider answers
# while no provider key is set). Replace it by mounting your own at /etc/tollway.
COPY gateway.yaml /etc/tollway/gateway.yaml

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TOLLWAY_CONFIG=/etc/tollway/gateway.yaml

USER 10001:10001
WORKDIR /var/lib/tollway

EXPOSE 4100 4101

# The image has no curl: the interpreter asks /healthz itself.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:4100/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["tollway"]
CMD ["serve", "-c", "/etc/tollway/gateway.yaml"]
