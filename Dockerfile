# A mediapipe worker image. No Docker engine runs where this project is developed: this
# file is kept simple and checked by reading.
FROM python:3.11-slim

RUN useradd --create-home --uid 10001 mediapipe
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY workers ./workers
COPY stages ./stages
RUN pip install --no-cache-dir . && rm -rf /root/.cache

USER mediapipe
ENV MEDIAPIPE_HOME=/home/mediapipe/.local/share/mediapipe
HEALTHCHECK --interval=30s --timeout=5s CMD ["mediapipe", "status", "--json"]
ENTRYPOINT ["mediapipe"]
CMD ["status"]
