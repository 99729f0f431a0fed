# A mediapipe worker node. Built and run for real in CI with podman (tests/container/):
#
#   tools/build-image                       # podman; stand-in bases when no registry answers
#   docker build -t mediapipe-worker .      # Docker with the official python image
#   docker run -e MEDIAPIPE_REDIS_URL=redis://queue:6379 -v /media:/media mediapipe-worker
#
# The base is a build argument: the official python:3.11-slim by default; where no registry
# is reachable, tools/build-image makes a stand-in from Debian bookworm's own packages
# (Python 3.11, python3-venv) and passes it here. Everything is installed into a venv, which
# works on both (Debian's system Python refuses system-wide pip installs, PEP 668).
ARG PYTHON_IMAGE=python:3.11-slim

# Build stage: the project and every dependency installed into /opt/mediapipe.
FROM ${PYTHON_IMAGE} AS build
RUN python3 -m venv /opt/mediapipe
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY workers ./workers
COPY stages ./stages
COPY mediajobs ./mediajobs
COPY tools/licence_notices.py /tmp/licence_notices.py
# A network that inspects TLS needs its CA for pip: passed as the build secret "pip_ca"
# (tools/build-image passes the host's pip certificate), never stored in a layer.
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && /opt/mediapipe/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && /opt/mediapipe/bin/pip uninstall --yes pip setuptools \
 && /opt/mediapipe/bin/python /tmp/licence_notices.py /opt/mediapipe/NOTICES \
 && find /opt/mediapipe -name __pycache__ -prune -exec rm -rf {} +

# Run stage: the same base, the venv, a non-root user. libvips and ffmpeg arrive inside
# the wheels (pyvips-binary, imageio-ffmpeg, av), so no system packages are needed.
FROM ${PYTHON_IMAGE}
RUN useradd --create-home --uid 10001 mediapipe
COPY --from=build /opt/mediapipe /opt/mediapipe
ENV PATH=/opt/mediapipe/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    MEDIAPIPE_METRICS_PORT=9100
USER mediapipe
WORKDIR /home/mediapipe
# /healthz: the process is up and Redis answers; /readyz: the node is taking jobs.
# Port 9100 also serves /metrics for Prometheus (publish it with -p to scrape). podman
# keeps a HEALTHCHECK only in images built with --format docker (tools/build-image does).
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('MEDIAPIPE_METRICS_PORT', '9100'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=5).status != 200)"]
# SIGTERM drains: running jobs get --grace seconds, then go back to the queue.
STOPSIGNAL SIGTERM
ENTRYPOINT ["mediapipe", "worker"]
CMD ["--grace", "60", "--metrics-host", "0.0.0.0"]
