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
# Healthy while the node can reach Redis; see docs/operations.md for the fleet checks.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
  CMD ["mediapipe", "status", "--json"]
# SIGTERM drains: running jobs get --grace seconds, then go back to the queue.
STOPSIGNAL SIGTERM
ENTRYPOINT ["mediapipe", "worker"]
CMD ["--grace", "60"]
