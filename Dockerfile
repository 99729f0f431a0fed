# A mediapipe worker node. No Docker engine runs where this project is developed, so this
# file is kept simple and was checked by reading, not by building.
#
#   docker build -t mediapipe-worker .
#   docker run -e MEDIAPIPE_REDIS_URL=redis://queue:6379 -v /media:/media mediapipe-worker

# Build stage: turn the project into wheels (ours and every dependency).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY workers ./workers
COPY stages ./stages
COPY mediajobs ./mediajobs
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Run stage: only the wheels; libvips and ffmpeg arrive inside them (pyvips-binary,
# imageio-ffmpeg, av), so no system packages are needed.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 mediapipe
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels mediajobs && rm -rf /wheels
USER mediapipe
WORKDIR /home/mediapipe
ENV PYTHONUNBUFFERED=1
# /healthz: the process is up and Redis answers; /readyz: the node is taking jobs.
# Port 9100 also serves /metrics for Prometheus (publish it with -p to scrape).
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=5).status != 200)"]
# SIGTERM drains: running jobs get --grace seconds, then go back to the queue.
STOPSIGNAL SIGTERM
ENTRYPOINT ["mediapipe", "worker"]
CMD ["--grace", "60", "--metrics-port", "9100", "--metrics-host", "0.0.0.0"]
