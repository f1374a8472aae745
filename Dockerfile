# syntax=docker/dockerfile:1
# Multi-stage build: dependencies are installed in a builder stage into /opt/venv; the runtime
# stage carries the virtual environment and the code only, and runs as an unprivileged user.
# The same image serves every role (see docker-compose.yml): `unlearnd migrate`,
# `unlearnd bootstrap`, `unlearnd api`, `unlearnd worker`.

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# torch first, pinned: on Linux x86_64 PyPI's torch 2.13.0 wheel is the CUDA build the GPU
# workers need. Copying pyproject.toml alone keeps this layer cached across code changes.
RUN pip install "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY app ./app
COPY workers ./workers
COPY models_store ./models_store
COPY unlearning ./unlearning
COPY migrations ./migrations
RUN pip install .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    UNLEARND_DATA_DIR=/data \
    UNLEARND_HOST=0.0.0.0 \
    UNLEARND_PORT=8000
RUN useradd --system --uid 10001 --home /data unlearnd \
    && mkdir -p /data && chown unlearnd /data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /srv/unlearnd
COPY alembic.ini ./
COPY migrations ./migrations
USER unlearnd
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)" || exit 1
CMD ["unlearnd", "api", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
